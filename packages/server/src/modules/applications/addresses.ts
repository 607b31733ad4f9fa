import { BlockList, isIP } from "node:net";

/** An IPv4 or IPv6 address, or a CIDR range of either ("10.0.0.0/8", "2001:db8::/32"). */
export function addressProblem(entry: string): string | null {
  const [address, prefix, extra] = entry.split("/");
  if (extra !== undefined || !address) return `${entry} is not an address or a CIDR range`;
  const family = isIP(address);
  if (family === 0) return `${address} is not an IP address`;
  if (prefix === undefined) return null;
  const bits = Number(prefix);
  const max = family === 4 ? 32 : 128;
  return /^\d+$/.test(prefix) && bits >= 0 && bits <= max ? null : `/${prefix} is not a prefix length for IPv${family}`;
}

/** Matches source addresses against a client's list; IPv4-mapped IPv6 sources count as IPv4. */
export function addressMatcher(entries: string[]): (source: string) => boolean {
  const list = new BlockList();
  for (const entry of entries) {
    const [address, prefix] = entry.split("/") as [string, string | undefined];
    const type = isIP(address) === 6 ? "ipv6" : "ipv4";
    if (prefix === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(prefix), type);
  }
  return (source) => {
    const plain = source.startsWith("::ffff:") && isIP(source.slice(7)) === 4 ? source.slice(7) : source;
    const family = isIP(plain);
    return family !== 0 && list.check(plain, family === 6 ? "ipv6" : "ipv4");
  };
}
