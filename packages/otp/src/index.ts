export { encodeBase32, decodeBase32 } from "./base32.js";
export { luhnCheckDigit, hasValidLuhnCheckDigit } from "./check-digit.js";
export { encodeBase64url, decodeBase64url } from "./base64url.js";
export { hotp, totp, totpStep, verifyTotp, verifyHotp, resyncHotp } from "./otp.js";
export type {
  OtpAlgorithm,
  OtpDigits,
  HotpOptions,
  HotpGenerator,
  TotpOptions,
  VerifyTotpOptions,
  VerifyTotpResult,
  VerifyHotpOptions,
  VerifyHotpResult,
  ResyncHotpOptions,
} from "./otp.js";
export { buildOtpauthUri, parseOtpauthUri } from "./otpauth-uri.js";
export type { OtpauthUri, OtpauthUriInput, OtpauthUriProblem, ParseOtpauthUriResult } from "./otpauth-uri.js";
export {
  generateEnrollmentKeys,
  exportPublicKey,
  importAgreementPublicKey,
  importSigningPublicKey,
  deriveTokenKey,
  randomCode,
  TOKEN_KEY_INFO_PREFIX,
  TOKEN_KEY_BYTES,
} from "./enrollment.js";
export type { EnrollmentKeys, ImportPublicKeyResult, DeriveTokenKeyOptions } from "./enrollment.js";
export {
  canonicalRequest,
  signRequest,
  verifySignature,
  sha256Base64url,
  CANONICAL_REQUEST_VERSION,
} from "./device-signature.js";
export type { SignedRequestFields } from "./device-signature.js";
export type { WebCryptoKey, WebCryptoKeyPair } from "./webcrypto.js";
