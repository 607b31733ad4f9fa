import { Attribute, MICROSOFT_VENDOR_ID } from "./attributes.js";
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
  /** CHAP, MS-CHAP, ARAP or EAP instead of PAP: answered with Access-Reject "PAP only". */
  | "not-pap"
  /** No User-Name (RFC 2865 section 4.1 says it SHOULD be there): answered with Access-Reject. */
  | "no-user-name"
  /** RFC 2865 section 5.2: the hidden password is not 16..128 octets in blocks of 16; dropped. */
  | "malformed-password"
  /** RFC 2865 section 5.44 table: User-Password appears at most once; dropped. */
  | "repeated-password";

/** Failures that still get an answer (Access-Reject with this Reply-Message); the others are dropped as malformed. */
export const REJECTED_FAILURES: Readonly<Partial<Record<PapRequestFailure, string>>> = {
  "not-pap": "PAP only",
  "no-user-name": "User-Name missing",
};

/** CHAP (RFC 2865 section 5.3), ARAP (RFC 2869 section 5.4), EAP (RFC 3579 section 3.1), MS-CHAP (RFC 2548). */
function usesAnotherMethod(packet: RadiusPacket): boolean {
  if (firstAttribute(packet, Attribute.ChapPassword) || firstAttribute(packet, Attribute.ArapPassword) || firstAttribute(packet, Attribute.EapMessage)) return true;
  return allAttributes(packet, Attribute.VendorSpecific).some((value) => value.length >= 4 && value.readUInt32BE(0) === MICROSOFT_VENDOR_ID);
}

/** Who a refused request names, for the audit trail: what it says of itself, no password. */
export type RefusedRequest = Pick<PapRequest, "nasIdentifier" | "callingStationId"> & { userName: string | null };

export function readPapRequest(
  packet: RadiusPacket,
  secret: Uint8Array,
): { ok: true; request: PapRequest } | { ok: false; reason: PapRequestFailure; named?: RefusedRequest } {
  const named = (): RefusedRequest => ({
    userName: textAttribute(packet, Attribute.UserName),
    nasIdentifier: textAttribute(packet, Attribute.NasIdentifier),
    callingStationId: textAttribute(packet, Attribute.CallingStationId),
  });
  const passwords = allAttributes(packet, Attribute.UserPassword);
  if (passwords.length > 1) return { ok: false, reason: "repeated-password" };
  const hidden = passwords[0];
  let password = "";
  if (hidden !== undefined) {
    const decrypted = decryptUserPassword(hidden, secret, packet.authenticator);
    if (!decrypted.ok) return { ok: false, reason: "malformed-password" };
    password = decrypted.password.toString("utf8");
  } else if (usesAnotherMethod(packet)) {
    return { ok: false, reason: "not-pap", named: named() };
  }
  // Otherwise no User-Password is an empty one (a Push OTP login): RFC 2865 section 5.2 would
  // send 16 hidden NULs, but FreeRADIUS (radclient, radtest, and FreeRADIUS proxying to
  // Tessera) never sends a zero-length attribute and leaves an empty User-Password out.
  const userName = textAttribute(packet, Attribute.UserName);
  if (userName === null) return { ok: false, reason: "no-user-name", named: named() };
  return {
    ok: true,
    request: {
      userName,
      password,
      state: firstAttribute(packet, Attribute.State),
      nasIdentifier: textAttribute(packet, Attribute.NasIdentifier),
      callingStationId: textAttribute(packet, Attribute.CallingStationId),
    },
  };
}
