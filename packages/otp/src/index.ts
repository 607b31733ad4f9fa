export { encodeBase32, decodeBase32 } from "./base32.js";
export { luhnCheckDigit, hasValidLuhnCheckDigit } from "./check-digit.js";
