import { Attribute } from "./attributes.js";
import { allAttributes, firstAttribute, textAttribute, type RadiusPacket } from "./codec.js";
import { decryptUserPassword } from "./crypto.js";

/** What Tessera reads from an Access-Request whose Message-Authenticator has been verified. */
export interface PapRequest {
  userName: string;
  /** The decrypted PAP password; empty for a Push OTP login. */
  password: string;
  /** RFC 2865 section 5.24: the State of an earlier Access-Challenge, echoed. */
  state: Buffer | null;
  nasIdentifier: string | null;
  callingStationId: string | null;
}

export type PapRequestFailure =
  /** No User-Password (CHAP, or State alone): answered with Access-Reject "PAP only". */
  | "not-pap"
  /** No User-Name (RFC 2865 section 4.1 says it SHOULD be there): answered with Access-Reject. */
  | "no-user-name"
  /** RFC 2865 section 5.2: the hidden password is not 16..128 octets in blocks of 16; dropped. */
  | "malformed-password"
  /** RFC 2865 section 5.44 table: User-Password appears at most once; dropped. */
  | "repeated-password";

/** Failures that still get an answer (Access-Reject); the others are dropped as malformed. */
export const REJECTED_FAILURES: Readonly<Partial<Record<PapRequestFailure, string>>> = {
  "not-pap": "PAP only",
  "no-user-name": "User-Name missing",
};

export function readPapRequest(packet: RadiusPacket, secret: Uint8Array): { ok: true; request: PapRequest } | { ok: false; reason: PapRequestFailure } {
  const passwords = allAttributes(packet, Attribute.UserPassword);
  if (passwords.length > 1) return { ok: false, reason: "repeated-password" };
  const hidden = passwords[0];
  if (hidden === undefined) return { ok: false, reason: "not-pap" };
  const decrypted = decryptUserPassword(hidden, secret, packet.authenticator);
  if (!decrypted.ok) return { ok: false, reason: "malformed-password" };
  const userName = textAttribute(packet, Attribute.UserName);
  if (userName === null) return { ok: false, reason: "no-user-name" };
  return {
    ok: true,
    request: {
      userName,
      password: decrypted.password.toString("utf8"),
      state: firstAttribute(packet, Attribute.State),
      nasIdentifier: textAttribute(packet, Attribute.NasIdentifier),
      callingStationId: textAttribute(packet, Attribute.CallingStationId),
    },
  };
}
