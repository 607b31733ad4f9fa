export { parsePskc, type PskcOptions } from "./pskc.js";
export { parseSeedCsv } from "./csv.js";
export {
  validateSerial,
  validateSecret,
  parseHashAlgorithm,
  MIN_SECRET_BYTES,
  type HashAlgorithm,
  type ImportedSeed,
  type OtpMode,
  type SeedFileResult,
  type SeedProblem,
} from "./seed.js";
