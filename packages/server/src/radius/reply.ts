import { Attribute, Code, HEADER_LENGTH, MAX_ATTRIBUTE_VALUE_LENGTH, MAX_PACKET_LENGTH, MESSAGE_AUTHENTICATOR_LENGTH, type ResponseCode } from "./attributes.js";
import type { RadiusAttribute } from "./codec.js";

/** What the authentication service decided about one Access-Request. */
export interface AccessDecision {
  result: "accept" | "reject" | "challenge";
  /** RFC 2865 section 5.18: shown to the user; split over several attributes when long. */
  replyMessage?: string;
  /** RFC 2865 section 5.24: sent with a challenge only; 1 to 253 octets. */
  state?: Buffer;
  /** RFC 2865 section 5.27: with an accept, the session's limit; with a challenge, how long the answer may take. */
  sessionTimeoutSeconds?: number;
}

/** A Reply-Message longer than this is cut: a NAS shows a line or two, not a page. */
export const MAX_REPLY_MESSAGE_OCTETS = 2048;

const CODES: Record<AccessDecision["result"], ResponseCode> = {
  accept: Code.AccessAccept,
  reject: Code.AccessReject,
  challenge: Code.AccessChallenge,
};

/**
 * Whether any answer to a request with these Proxy-States fits in one packet: the
 * largest State and a Session-Timeout besides them (a Reply-Message is cut to fit).
 * Asked before the request is authenticated, so that a request we could not answer
 * changes nothing.
 */
export function answerFits(proxyStates: readonly Buffer[]): boolean {
  const largest = HEADER_LENGTH + 2 + MESSAGE_AUTHENTICATOR_LENGTH + 2 + MAX_ATTRIBUTE_VALUE_LENGTH + 2 + 4;
  return largest + proxyStates.reduce((sum, value) => sum + 2 + value.length, 0) <= MAX_PACKET_LENGTH;
}

/**
 * The response's code and attributes, Message-Authenticator aside (signResponse puts it first).
 * Throws RangeError only when the decision itself is a bug (an empty or oversized State, a
 * Session-Timeout that is not a 32-bit count of seconds).
 */
export function replyFor(decision: AccessDecision, proxyStates: readonly Buffer[]): { code: ResponseCode; attributes: RadiusAttribute[] } {
  const fixed: RadiusAttribute[] = [];
  if (decision.result === "challenge" && decision.state !== undefined) {
    if (decision.state.length < 1 || decision.state.length > MAX_ATTRIBUTE_VALUE_LENGTH) throw new RangeError(`State must be 1 to ${MAX_ATTRIBUTE_VALUE_LENGTH} octets`);
    fixed.push({ type: Attribute.State, value: decision.state });
  }
  const seconds = decision.sessionTimeoutSeconds;
  if (seconds !== undefined && decision.result !== "reject") {
    if (!Number.isInteger(seconds) || seconds < 0 || seconds > 0xffffffff) throw new RangeError(`Session-Timeout ${seconds} is not a 32-bit count of seconds`);
    const value = Buffer.alloc(4);
    value.writeUInt32BE(seconds);
    fixed.push({ type: Attribute.SessionTimeout, value });
  }
  // RFC 2865 section 5.33: Proxy-State is copied unmodified, in order, into the response.
  for (const proxyState of proxyStates) fixed.push({ type: Attribute.ProxyState, value: proxyState });

  const used = HEADER_LENGTH + 2 + MESSAGE_AUTHENTICATOR_LENGTH + fixed.reduce((sum, attribute) => sum + 2 + attribute.value.length, 0);
  const messages = decision.replyMessage ? replyMessageAttributes(decision.replyMessage, MAX_PACKET_LENGTH - used) : [];
  return { code: CODES[decision.result], attributes: [...messages, ...fixed] };
}

/**
 * Splits text into Reply-Message attributes of at most 253 octets each, never inside a UTF-8
 * character, within `budget` octets of attributes (RFC 2865 section 3: 4096 octets a packet).
 */
function replyMessageAttributes(text: string, budget: number): RadiusAttribute[] {
  const attributes: RadiusAttribute[] = [];
  const whole = Buffer.from(text, "utf8");
  let rest = whole.subarray(0, characterBoundary(whole, MAX_REPLY_MESSAGE_OCTETS));
  let remaining = budget;
  while (rest.length > 0 && remaining > 2) {
    const end = characterBoundary(rest, Math.min(MAX_ATTRIBUTE_VALUE_LENGTH, remaining - 2));
    if (end === 0) break;
    attributes.push({ type: Attribute.ReplyMessage, value: rest.subarray(0, end) });
    remaining -= 2 + end;
    rest = rest.subarray(end);
  }
  return attributes;
}

/** The largest cut at or below `limit` that does not split a UTF-8 sequence (continuation octets are 10xxxxxx). */
function characterBoundary(bytes: Buffer, limit: number): number {
  if (bytes.length <= limit) return bytes.length;
  let end = limit;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return end;
}
