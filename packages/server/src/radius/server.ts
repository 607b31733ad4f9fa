import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { isIP } from "node:net";
import { networkInterfaces } from "node:os";
import { mappedIPv4 } from "../modules/applications/addresses.js";
import { systemClock, type Clock } from "../clock.js";
import { Attribute, Code } from "./attributes.js";
import { allAttributes, decodePacket, type RadiusPacket } from "./codec.js";
import { signResponse, verifyPacketMessageAuthenticator } from "./crypto.js";
import { createDuplicateCache, duplicateKey } from "./duplicates.js";
import { answerFits, replyFor, type AccessDecision } from "./reply.js";
import { readPapRequest, REJECTED_FAILURES, type RefusedRequest } from "./request.js";

/**
 * Tessera's RADIUS server (RFC 2865, PAP only) on a UDP socket per address. The pipeline, cheapest
 * checks first; a datagram failing a check is dropped silently (RFC 2865 section 3) and
 * counted:
 *
 *   decode -> Access-Request (or Status-Server)? -> known client (by source address) ->
 *   Message-Authenticator (required, BlastRADIUS) -> retransmission? (answered from the
 *   cache, or dropped while the first copy is in flight: see duplicates.ts) -> read PAP
 *   (CHAP and the like get Access-Reject "PAP only") -> authenticate -> sign
 *   (Message-Authenticator first) -> cache -> send.
 *
 * Status-Server (RFC 5997), which NASes and proxies send to learn whether a server is
 * up before they send it logins, is answered with Access-Accept after the same client and
 * Message-Authenticator checks, while `ready` says the server can decide logins (its
 * database answers); otherwise it gets no answer, so the NAS turns to another server.
 *
 * No datagram can crash it: each is handled in its own promise whose failure is counted
 * as an error and logged.
 */

/** A RADIUS client (an application of kind "radius"). */
export interface RadiusClient {
  id: string;
  secret: Buffer;
}

export type { AccessDecision } from "./reply.js";

/** What authenticate is asked. The password is never logged. */
export interface AccessRequest {
  clientId: string;
  userName: string;
  /** The decrypted PAP password; empty for a Push OTP login. */
  password: string;
  /** The State of an Access-Challenge this request answers (RFC 2865 section 5.24). */
  state: Buffer | null;
  nasIdentifier: string | null;
  callingStationId: string | null;
  source: { address: string; port: number };
}

/** Pino's shape (Fastify's logger fits). */
export interface RadiusLogger {
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface RadiusServerOptions {
  /**
   * The address to listen on ("127.0.0.1"), or several, comma separated
   * ("192.0.2.10,192.0.2.11"). Each gets a socket of its own, so that an answer leaves
   * from the address its request was sent to: a NAS drops an answer from another address,
   * and node:dgram cannot tell which address a request on a wildcard socket came to. So
   * "0.0.0.0" (every IPv4 address) and "::" (every address) are not bound as such: they
   * stand for the host's addresses, each bound on its own, looked for again every
   * `rescanMs` (an address added, a VIP that moved here, is heard from the next look; one
   * gone is let go). IPv6 link-local addresses are left out (they need a zone).
   */
  host: string;
  /** How often the addresses are looked at again: a wildcard's (added, gone) and listed ones not on the host yet. @default 10000 */
  rescanMs?: number;
  /** The host's addresses, for a wildcard (tests). @default every address of os.networkInterfaces() but IPv6 link-local */
  localAddresses?: () => string[];
  /** UDP port, the same on every address; 0 takes a free one (see address()). RFC 2865 section 3: 1812. */
  port: number;
  /**
   * The clients whose addresses hold a source address, the most specific first; empty
   * for none. The request belongs to the first whose shared secret verifies its
   * Message-Authenticator, so that a client whose range holds another's address (in
   * another virtual server, say) cannot take that client's requests. IPv4-mapped IPv6
   * sources arrive as plain IPv4.
   */
  findClients(address: string): Promise<RadiusClient[]> | RadiusClient[];
  /** Decides one PAP request; may take as long as a push takes (the NAS retransmits meanwhile). */
  authenticate(request: AccessRequest): Promise<AccessDecision>;
  /**
   * A signed request refused before any user or passcode is looked at (CHAP or another
   * method instead of PAP, no User-Name), so that it is audited and counted too; its
   * Access-Reject goes out once this resolves (if it throws, none does, as when
   * authenticate throws).
   */
  refused?(request: RefusedRequest & { clientId: string; reason: "not-pap" | "no-user-name"; source: { address: string; port: number } }): Promise<void>;
  /** Whether Status-Server is answered: the server can decide logins now. @default always */
  ready?(): Promise<boolean>;
  /** How long an answer is kept to answer retransmissions. @default 30000 */
  duplicateCacheMs?: number;
  /** The most answers kept for retransmissions, and the most requests in flight. @default 100000 */
  duplicateCacheMaxEntries?: number;
  /** @default systemClock */
  clock?: Clock;
  logger?: RadiusLogger;
}

/**
 * Counters since start. requests = accepts + rejects + challenges + statusAnswers + resent +
 * dropped once nothing is in flight. Each drop also counts under the first check it
 * failed, in the pipeline's order: junk from a stranger is "malformed", not "unknownClient".
 */
export type RadiusStats = {
  /** Datagrams received. */
  requests: number;
  accepts: number;
  rejects: number;
  challenges: number;
  /** Status-Server requests answered (RFC 5997). */
  statusAnswers: number;
  /** Retransmissions recognised: resent from the cache, or dropped while the first is in flight. */
  duplicates: number;
  /** Retransmissions answered from the cache. */
  resent: number;
  /** Datagrams that got no answer, for any of the reasons below or a duplicate in flight. */
  dropped: number;
  unknownClient: number;
  /** Message-Authenticator missing, repeated or wrong (a wrong shared secret lands here). */
  badAuthenticator: number;
  /** Not a RADIUS packet (RFC 2865 section 3), or a User-Password that cannot be one (section 5.2). */
  malformed: number;
  /** A code other than Access-Request. */
  unexpectedCode: number;
  /** Refused because duplicateCacheMaxEntries requests were in flight. */
  overloaded: number;
  /** Status-Server while the server could not decide logins (`ready` said no, or failed). */
  notReady: number;
  /** Thrown by findClients or authenticate, a bad decision, or a failed send. */
  errors: number;
  /** Now, not since start: requests being authenticated, answers cached. */
  inFlight: number;
  cached: number;
};

export interface RadiusServer {
  address(): { address: string; port: number };
  /**
   * Stops taking requests, lets every request being decided finish and sends its answer,
   * then closes the sockets (so that nothing of theirs runs against a database closed
   * next). A request that waits on the phone should be told to stop waiting first (see
   * tessera.ts); one that then throws an AbortError goes unanswered. Called twice, the
   * second call resolves with the first.
   */
  close(): Promise<void>;
  stats(): RadiusStats;
}

type DropReason = "unknownClient" | "badAuthenticator" | "malformed" | "unexpectedCode" | "overloaded" | "duplicates" | "notReady";

/** Where a datagram came from, and the socket (the address) it came to: its answer leaves from there. */
type Remote = RemoteInfo & { via: Socket };

/** The longest close() waits for answers on their way out. */
const SEND_DRAIN_MS = 1_000;

/** One warning per reason per this many milliseconds: a flood of junk must not flood the log. */
const DROP_LOG_INTERVAL_MS = 10_000;

/** Starts the server; resolves once the socket is bound, rejects if it cannot bind. */
export async function createRadiusServer(options: RadiusServerOptions): Promise<RadiusServer> {
  const { findClients, authenticate, logger } = options;
  const clock = options.clock ?? systemClock;
  const cache = createDuplicateCache({
    ttlMs: options.duplicateCacheMs ?? 30_000,
    maxEntries: Math.max(1, options.duplicateCacheMaxEntries ?? 100_000),
    clock,
  });
  const counters = {
    requests: 0, accepts: 0, rejects: 0, challenges: 0, statusAnswers: 0, duplicates: 0, resent: 0, dropped: 0,
    unknownClient: 0, badAuthenticator: 0, malformed: 0, unexpectedCode: 0, overloaded: 0, notReady: 0, errors: 0,
  };
  const lastDropLogMs = new Map<DropReason, { atMs: number; suppressed: number }>();
  const hosts = options.host.split(",").map((host) => host.trim()).filter(Boolean);
  const wildcards: string[] = hosts.filter((host) => host === "0.0.0.0" || host === "::");
  /** The addresses to hear on now: those listed, and for a wildcard the host's own of its family. */
  const wanted = (): string[] => {
    const found = new Set(hosts.filter((host) => !wildcards.includes(host)));
    if (wildcards.length > 0) {
      const everyFamily = wildcards.includes("::");
      for (const address of (options.localAddresses ?? hostAddresses)()) if (everyFamily || isIP(address) === 4) found.add(address);
    }
    return [...found];
  };
  /** A socket for each address heard on, by address. */
  const sockets = new Map<string, Socket>();
  let port = options.port;
  /** close() was called: no new request is taken; waits ended by it go unanswered. */
  let stopping = false;
  /** The sockets are closed: nothing more is sent. */
  let closed = false;
  /** The requests being decided, and the answers on their way out: close waits for them. */
  const deciding = inFlightCount();
  const sending = inFlightCount();
  // Answers past their time are forgotten when a request comes, and also when none does:
  // after a burst, the memory and the cached-answers gauge do not wait for the next one.
  const sweeper = setInterval(() => cache.size(), Math.max(1_000, options.duplicateCacheMs ?? 30_000));
  sweeper.unref();

  function drop(reason: DropReason, fields: object) {
    counters[reason]++;
    counters.dropped++;
    if (!logger || reason === "duplicates") return;
    const nowMs = clock.nowMs();
    const last = lastDropLogMs.get(reason);
    if (last && nowMs - last.atMs < DROP_LOG_INTERVAL_MS) {
      last.suppressed++;
      return;
    }
    lastDropLogMs.set(reason, { atMs: nowMs, suppressed: 0 });
    logger.warn({ ...fields, reason, suppressedSinceLast: last?.suppressed ?? 0 }, "RADIUS datagram dropped");
  }

  function send(response: Buffer, source: Remote) {
    if (closed) return;
    const failed = (error: Error) => {
      counters.errors++;
      logger?.error({ source: source.address, error: error.message }, "RADIUS response not sent");
    };
    // The datagram has left once the callback comes: close() waits for that (a count, not
    // a promise a datagram: this is every answer's path).
    sending.add();
    try {
      source.via.send(response, source.port, source.address, (error) => {
        sending.done();
        if (error) failed(error);
      });
    } catch (error) {
      // Its address went from the host, and its socket with it, while the request was decided.
      sending.done();
      failed(error as Error);
    }
  }

  async function decide(packet: RadiusPacket, client: RadiusClient, source: { address: string; port: number }): Promise<AccessDecision | null> {
    const read = readPapRequest(packet, client.secret);
    if (read.ok) return authenticate({ clientId: client.id, ...read.request, source });
    const replyMessage = REJECTED_FAILURES[read.reason];
    if (replyMessage === undefined) return null;
    if (options.refused && read.named && (read.reason === "not-pap" || read.reason === "no-user-name")) await options.refused({ clientId: client.id, reason: read.reason, ...read.named, source });
    return { result: "reject", replyMessage };
  }

  /**
   * RFC 5997: Access-Accept, signed like every answer, each time it is asked (the answer
   * costs less than a cache, and a client checks liveness with each one).
   */
  async function answerStatus(packet: RadiusPacket, client: RadiusClient, remote: Remote, proxyStates: Buffer[]) {
    const ready = options.ready ? await options.ready().catch(() => false) : true;
    if (!ready) return drop("notReady", { source: remote.address, clientId: client.id });
    const { code, attributes } = replyFor({ result: "accept", replyMessage: "Tessera is up" }, proxyStates);
    counters.statusAnswers++;
    send(signResponse({ code, identifier: packet.identifier, attributes }, packet.authenticator, client.secret), remote);
  }

  async function handle(datagram: Buffer, remote: Remote) {
    const decoded = decodePacket(datagram);
    if (!decoded.ok) return drop("malformed", { source: remote.address, problem: decoded.reason });
    const packet = decoded.packet;
    // RFC 2865 section 3: a server only receives Access-Request (and, RFC 5997,
    // Status-Server); Tessera does no accounting.
    if (packet.code !== Code.AccessRequest && packet.code !== Code.StatusServer) return drop("unexpectedCode", { source: remote.address, code: packet.code });

    // "::ffff:192.0.2.1" (an IPv4 source on an IPv6 socket) is 192.0.2.1 from here on.
    const source = { address: mappedIPv4(remote.address) ?? remote.address, port: remote.port };
    const candidates = await findClients(source.address);
    if (candidates.length === 0) return drop("unknownClient", { source: source.address });
    // BlastRADIUS: without a verified Message-Authenticator an Access-Request could be
    // forged. The shared secret that verifies it also says whose request it is.
    let client: RadiusClient | undefined;
    let problem = "";
    for (const candidate of candidates) {
      const signed = verifyPacketMessageAuthenticator(packet, candidate.secret);
      if (signed.ok) {
        client = candidate;
        break;
      }
      problem ||= signed.reason;
      // Missing or repeated: no secret can verify it.
      if (signed.reason !== "mismatch") break;
    }
    if (!client) return drop("badAuthenticator", { source: source.address, clientId: candidates[0]!.id, problem });

    // Proxy-States are copied into the answer: when they leave no room for it, the request
    // is dropped before it is authenticated, not after (a passcode spent, no answer sent).
    const proxyStates = allAttributes(packet, Attribute.ProxyState);
    if (!answerFits(proxyStates)) return drop("malformed", { source: source.address, clientId: client.id, problem: "proxy-state leaves no room for an answer" });

    if (packet.code === Code.StatusServer) return answerStatus(packet, client, remote, proxyStates);

    const key = duplicateKey(source, packet.identifier, packet.authenticator);
    const claim = cache.claim(key);
    if (claim.kind === "answered") {
      counters.duplicates++;
      counters.resent++;
      return send(claim.response, remote);
    }
    if (claim.kind === "in-flight") return drop("duplicates", { source: source.address });
    if (claim.kind === "full") return drop("overloaded", { source: source.address, clientId: client.id });

    try {
      const decision = await decide(packet, client, source);
      if (decision === null) {
        cache.abandon(key);
        return drop("malformed", { source: source.address, clientId: client.id, problem: "user-password" });
      }
      const { code, attributes } = replyFor(decision, proxyStates);
      const response = signResponse({ code, identifier: packet.identifier, attributes }, packet.authenticator, client.secret);
      cache.complete(key, response);
      if (decision.result === "accept") counters.accepts++;
      else if (decision.result === "reject") counters.rejects++;
      else counters.challenges++;
      send(response, remote);
    } catch (error) {
      // No answer: the next retransmission is processed afresh rather than dropped as a duplicate.
      cache.abandon(key);
      throw error;
    }
  }

  /**
   * Binds a socket to `address` on the server's port, to hear requests there and answer
   * from there. Resolves false, with nothing bound, when the address is not on this host
   * (EADDRNOTAVAIL: a VIP held by another node, an IPv6 address not yet usable): it is
   * tried again at each look.
   */
  async function listenOn(address: string): Promise<boolean> {
    const socket = createSocket({ type: isIP(address) === 6 ? "udp6" : "udp4" });
    socket.on("message", (datagram, remote) => {
      counters.requests++;
      // The server stops: what is being decided finishes, nothing new is taken (the NAS asks again).
      if (stopping) {
        counters.dropped++;
        return;
      }
      // The answer goes out through the socket the request came in on, from its address.
      deciding.add();
      handle(datagram, Object.assign(remote, { via: socket })).then(deciding.done, (error: unknown) => {
        deciding.done();
        counters.dropped++;
        // A wait ended because the server stops: no answer, and nothing went wrong.
        if (stopping && error instanceof Error && error.name === "AbortError") return;
        counters.errors++;
        logger?.error({ source: remote.address, error: error instanceof Error ? error.message : String(error) }, "RADIUS request failed");
      });
    });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("error", reject);
        socket.bind({ address, port }, () => {
          socket.off("error", reject);
          resolve();
        });
      });
    } catch (error) {
      socket.removeAllListeners();
      try {
        socket.close();
      } catch {
        // Never bound: nothing to close.
      }
      if ((error as NodeJS.ErrnoException).code === "EADDRNOTAVAIL") return false;
      throw error;
    }
    if (stopping) {
      // Bound by a look that ran into close(): not kept.
      await closeSocket(socket);
      return false;
    }
    socket.on("error", (error) => {
      counters.errors++;
      logger?.error({ address, error: error.message }, "RADIUS socket error");
    });
    // The first address takes the port (a free one when 0 is asked); the others the same.
    port = socket.address().port;
    sockets.set(address, socket);
    return true;
  }

  const closeSocket = (socket: Socket) => new Promise<void>((resolve) => socket.close(() => resolve()));
  /** Addresses asked for but not on this host yet, each told once in the log until it is bound. */
  const absent = new Set<string>();
  const notHere = (address: string) => {
    if (absent.has(address)) return;
    absent.add(address);
    logger?.warn({ address }, "RADIUS address not on this host (yet): listened on once it is, looked for every few seconds");
  };

  try {
    const addresses = wanted();
    if (addresses.length === 0) throw new Error("no address to listen on for RADIUS");
    for (const address of addresses) if (!(await listenOn(address))) notHere(address);
    // A standby node may hold none of its addresses yet, but it must know its port.
    if (sockets.size === 0 && port === 0) throw new Error(`none of the RADIUS addresses is on this host (${options.host}), and port 0 names no port to wait on`);
  } catch (error) {
    // A port in use, or a wrong address, is a start-up failure, not a request's.
    stopping = true;
    closed = true;
    clearInterval(sweeper);
    await Promise.all([...sockets.values()].map(closeSocket));
    throw error;
  }

  // The addresses are looked for again: one added to the host (a VIP moved here, a
  // wildcard's new address) is bound, one a wildcard no longer finds is let go.
  const look = async () => {
    let now: string[];
    try {
      now = wanted();
    } catch (error) {
      // The host's addresses could not be read (out of file descriptors, say): the
      // sockets stay as they are until a look that can.
      logger?.error({ error: error instanceof Error ? error.message : String(error) }, "RADIUS could not read this host's addresses; tried again at the next look");
      return;
    }
    for (const [address, socket] of sockets) {
      if (now.includes(address)) continue;
      sockets.delete(address);
      // An answer handed to it just now still leaves first (dgram sends after a tick;
      // a socket closed before then drops the datagram and never calls back).
      await new Promise((resolve) => setImmediate(resolve));
      await closeSocket(socket);
    }
    for (const address of now) {
      if (sockets.has(address) || stopping) continue;
      try {
        if (!(await listenOn(address))) notHere(address);
        else if (absent.delete(address)) logger?.warn({ address }, "RADIUS address now on this host: listening on it");
      } catch (error) {
        logger?.error({ address, error: error instanceof Error ? error.message : String(error) }, "RADIUS cannot listen on an address of this host; tried again at the next look");
      }
    }
  };
  let looking: Promise<void> | null = null;
  const rescanner = setInterval(() => {
    looking ??= look().finally(() => (looking = null));
  }, options.rescanMs ?? 10_000);
  rescanner.unref();
  let closing: Promise<void> | null = null;

  return {
    address() {
      // The first address as given (a wildcard stays one), on the port bound.
      return { address: hosts[0]!, port };
    },
    close() {
      closing ??= (async () => {
        stopping = true;
        clearInterval(sweeper);
        clearInterval(rescanner);
        await looking;
        // The requests being decided finish, and their answers go out, before the sockets close.
        await deciding.none();
        // Each comes within moments; a callback dgram never makes must not hold the stop.
        await sending.none(SEND_DRAIN_MS);
        closed = true;
        await Promise.all([...sockets.values()].map(closeSocket));
        cache.clear();
      })();
      return closing;
    },
    stats() {
      const { answered, inFlight } = cache.size();
      return { ...counters, inFlight, cached: answered };
    },
  };
}

/** Every address of the host's interfaces, loopback included, but IPv6 link-local ones (they need a zone to be bound). */
function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((entries) => entries ?? [])
    .filter((entry) => !(entry.family === "IPv6" && /^fe[89ab]/i.test(entry.address)))
    .map((entry) => entry.address);
}

/** A count of things under way, and a wait for none to be left (at most `limitMs`, when given). */
function inFlightCount() {
  let count = 0;
  let idle: (() => void) | null = null;
  return {
    add() {
      count++;
    },
    done() {
      if (--count === 0) idle?.();
    },
    none(limitMs?: number): Promise<void> {
      if (count === 0) return Promise.resolve();
      return new Promise<void>((resolve) => {
        idle = resolve;
        if (limitMs !== undefined) setTimeout(resolve, limitMs).unref();
      });
    },
  };
}
