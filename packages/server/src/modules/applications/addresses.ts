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

/**
 * The eight 16-bit groups of an IPv6 address, an IPv4 tail ("::ffff:192.0.2.1") as the
 * last two and a zone ("%eth0") left out; null for anything that is not an IPv6 address.
 */
export function ipv6Groups(address: string): number[] | null {
  if (isIP(address) !== 6) return null;
  let text = address.split("%")[0]!;
  const dotted = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const gap = tail === undefined ? 0 : 8 - left.length - right.length;
  return [...left, ...Array<string>(gap).fill("0"), ...right].map((group) => Number.parseInt(group, 16));
}

/**
 * The IPv4 address an IPv4-mapped IPv6 address (::ffff:0:0/96) stands for, however it is
 * written ("::ffff:192.0.2.1", "::ffff:c000:201", "0:0:0:0:0:ffff:192.0.2.1"); null for
 * any other address.
 */
export function mappedIPv4(address: string): string | null {
  const groups = ipv6Groups(address);
  if (!groups || groups.slice(0, 5).some((group) => group !== 0) || groups[5] !== 0xffff) return null;
  return lastIPv4(groups);
}

/** The IPv4 address the last 32 bits of an IPv6 address's groups spell, dotted. */
export function lastIPv4(groups: number[]): string {
  const [high, low] = [groups[6]!, groups[7]!];
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

/**
 * How specific an entry of a client list is for a source of each family: its prefix
 * length (32 or 128 for one address) where it can hold such sources, -1 where it cannot.
 * An IPv6 entry holds IPv4 sources only through ::ffff:0:0/96, so ::ffff:10.0.0.0/104 is
 * as specific as 10.0.0.0/8 for them, and ::/0 no more than 0.0.0.0/0.
 */
export function entrySpecificity(entry: string): { ipv4: number; ipv6: number } {
  const [address, prefix] = entry.split("/") as [string, string | undefined];
  if (isIP(address) === 4) return { ipv4: prefix === undefined ? 32 : Number(prefix), ipv6: -1 };
  const bits = prefix === undefined ? 128 : Number(prefix);
  const groups = ipv6Groups(address) ?? [];
  // The entry reaches IPv4 sources when its first min(bits, 96) bits are those of ::ffff:0:0/96.
  const mappedHead = [0, 0, 0, 0, 0, 0xffff];
  let reachesIPv4 = true;
  for (let bit = 0; bit < Math.min(bits, 96); bit++) {
    const group = Math.floor(bit / 16);
    const mask = 0x8000 >> bit % 16;
    if (((groups[group] ?? 0) & mask) !== (mappedHead[group]! & mask)) {
      reachesIPv4 = false;
      break;
    }
  }
  return { ipv4: reachesIPv4 ? Math.max(0, bits - 96) : -1, ipv6: bits };
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
    const plain = mappedIPv4(source) ?? source;
    const family = isIP(plain);
    return family !== 0 && list.check(plain, family === 6 ? "ipv6" : "ipv4");
  };
}
