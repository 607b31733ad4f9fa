/**
 * The RADIUS codes and attribute types Tessera reads or writes. Numbers are from the
 * IANA RADIUS registry; each cites the RFC section that defines it.
 */

/** Packet codes, RFC 2865 section 3 (Access-Challenge: section 4.4). */
export const Code = {
  AccessRequest: 1,
  AccessAccept: 2,
  AccessReject: 3,
  AccessChallenge: 11,
  /** RFC 5997: is the server up? Answered with Access-Accept on the authentication port. */
  StatusServer: 12,
} as const;

export type ResponseCode = typeof Code.AccessAccept | typeof Code.AccessReject | typeof Code.AccessChallenge;

/** Attribute types, RFC 2865 section 5 unless noted. */
export const Attribute = {
  /** 5.1: text, the name of the user to authenticate. */
  UserName: 1,
  /** 5.2: PAP password, hidden with the shared secret (see crypto.ts). */
  UserPassword: 2,
  /** 5.3: present when the NAS uses CHAP; Tessera answers PAP only. */
  ChapPassword: 3,
  /** 5.4: 4 octets. */
  NasIpAddress: 4,
  /** 5.5: 32-bit integer. */
  NasPort: 5,
  /** 5.6: 32-bit integer. */
  ServiceType: 6,
  /** 5.18: text shown to the user; may appear several times, shown in order. */
  ReplyMessage: 18,
  /** 5.24: opaque, sent in an Access-Challenge and echoed in the next Access-Request. */
  State: 24,
  /** 5.25: opaque, sent in an Access-Accept. */
  Class: 25,
  /** 5.26: kept raw; Tessera neither reads nor writes vendor attributes. */
  VendorSpecific: 26,
  /** 5.27: 32-bit integer, seconds. */
  SessionTimeout: 27,
  /** 5.30: text. */
  CalledStationId: 30,
  /** 5.31: text, e.g. the VPN user's public address. */
  CallingStationId: 31,
  /** 5.32: text naming the NAS. */
  NasIdentifier: 32,
  /** 5.33: opaque; a proxy's, copied unmodified and in order into the response. */
  ProxyState: 33,
  /** 5.41: 32-bit integer. */
  NasPortType: 61,
  /** RFC 2869 section 5.4: present when the NAS uses ARAP; Tessera answers PAP only. */
  ArapPassword: 70,
  /** RFC 3579 section 3.1: present when the NAS uses EAP; Tessera answers PAP only. */
  EapMessage: 79,
  /** RFC 2869 section 5.14, RFC 3579 section 3.2: HMAC-MD5 over the whole packet, 16 octets. */
  MessageAuthenticator: 80,
} as const;

/** RFC 2548 section 2: MS-CHAP travels in Vendor-Specific attributes of Microsoft's vendor id. */
export const MICROSOFT_VENDOR_ID = 311;

/** RFC 2865 section 3: the header is Code, Identifier, Length and a 16-octet Authenticator. */
export const HEADER_LENGTH = 20;
export const AUTHENTICATOR_LENGTH = 16;
/** RFC 2865 section 3: "The minimum length is 20 and maximum length is 4096." */
export const MIN_PACKET_LENGTH = 20;
export const MAX_PACKET_LENGTH = 4096;
/** RFC 2865 section 5: the Length octet counts Type and Length, so a value is at most 253 octets. */
export const MAX_ATTRIBUTE_VALUE_LENGTH = 253;
/** RFC 3579 section 3.2: the Message-Authenticator value is 16 octets. */
export const MESSAGE_AUTHENTICATOR_LENGTH = 16;
