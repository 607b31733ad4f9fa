import { z } from "zod";

/**
 * The policy of a virtual server: each field is inherited from the parent unless the
 * virtual server overrides it; the root inherits these defaults.
 */
export const policySettingsSchema = z.strictObject({
  /** Digits of each passcode. @default 6 */
  otpDigits: z.union([z.literal(6), z.literal(8)]),
  /** TOTP time step in seconds (RFC 6238 recommends 30). @default 30 */
  otpPeriodSeconds: z.number().int().min(15).max(120),
  /** HMAC hash of the OTP algorithm. @default SHA1 */
  otpAlgorithm: z.enum(["SHA1", "SHA256", "SHA512"]),
  /** Apps a mobile token may be enrolled into. @default ["tessera", "otp-app"] */
  allowedApps: z.array(z.enum(["tessera", "otp-app"])).min(1),
  /** Consecutive failures before a token locks. @default 3 */
  lockThreshold: z.number().int().min(1).max(100),
  /** Seconds a locked token stays locked before it unlocks by itself; 0 means until an operator unlocks it. @default 900 */
  lockDurationSeconds: z.number().int().min(0).max(30 * 24 * 3600),
  /** Days an enrollment stays open when a task gives no stop date. @default 7 */
  enrollmentLifetimeDays: z.number().int().min(1).max(365),
});

export type PolicySettings = z.infer<typeof policySettingsSchema>;
export type PolicyField = keyof PolicySettings;

export const defaultPolicy: PolicySettings = {
  otpDigits: 6,
  otpPeriodSeconds: 30,
  otpAlgorithm: "SHA1",
  allowedApps: ["tessera", "otp-app"],
  lockThreshold: 3,
  lockDurationSeconds: 900,
  enrollmentLifetimeDays: 7,
};

/** An update: a value overrides, null returns the field to inheritance. */
export const policyUpdateSchema = z.strictObject(
  Object.fromEntries(
    Object.entries(policySettingsSchema.shape).map(([field, schema]) => [field, schema.nullable().optional()]),
  ) as { [K in PolicyField]: z.ZodOptional<z.ZodNullable<(typeof policySettingsSchema.shape)[K]>> },
);

export type PolicyUpdate = z.infer<typeof policyUpdateSchema>;
export type PolicyOverrides = Partial<PolicySettings>;

export interface ResolvedPolicy {
  effective: PolicySettings;
  /** Which virtual server each effective value comes from; "default" for the built-in defaults. */
  source: Record<PolicyField, string>;
}

/** Resolves overrides given from the root down to the virtual server itself. */
export function resolvePolicy(chain: Array<{ virtualServerId: string; overrides: PolicyOverrides }>): ResolvedPolicy {
  const effective: Record<string, unknown> = { ...defaultPolicy };
  const source = Object.fromEntries(Object.keys(defaultPolicy).map((field) => [field, "default"])) as Record<PolicyField, string>;
  for (const { virtualServerId, overrides } of chain) {
    for (const [field, value] of Object.entries(overrides)) {
      if (value === undefined || !(field in defaultPolicy)) continue;
      effective[field] = value;
      source[field as PolicyField] = virtualServerId;
    }
  }
  return { effective: effective as PolicySettings, source };
}
