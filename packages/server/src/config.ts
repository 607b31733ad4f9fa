import { readFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";

/** The push services of Chrome and Android, Firefox, Safari and Apple devices, and Edge on Windows. */
export const DEFAULT_WEB_PUSH_HOSTS = ["fcm.googleapis.com", "updates.push.services.mozilla.com", "*.push.apple.com", "*.notify.windows.com"];

/**
 * One schema over the environment, parsed once at start. Every option documents its
 * default here; docs/configuration.md is checked against this list by a test.
 */
const environmentSchema = z.object({
  /** Directory for the SQLite database, the master key file and other state. @default ./data */
  TESSERA_DATA_DIR: z.string().min(1).default("./data"),
  /** Address the HTTP server listens on. @default 127.0.0.1 */
  TESSERA_HTTP_HOST: z.string().min(1).default("127.0.0.1"),
  /** Port of the HTTP server (0 picks a free one). @default 8080 */
  TESSERA_HTTP_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  /** Address users and operators reach this server at, used in links. @default http://{host}:{port} */
  TESSERA_PUBLIC_URL: z.url().optional(),
  /** PostgreSQL connection string; without it Tessera uses SQLite in the data directory. @default (none: SQLite) */
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL").optional(),
  /** Master key for token keys at rest: 32 bytes as 64 hex digits or base64. @default (none: key file in the data directory) */
  TESSERA_MASTER_KEY: z.string().optional(),
  /** Former master keys, comma separated, still accepted for decryption until `tessera keys rotate` has run. @default (none) */
  TESSERA_PREVIOUS_MASTER_KEYS: z.string().optional(),
  /** Address the RADIUS server listens on (UDP), or several, comma separated: answers leave from the address asked. @default 127.0.0.1 */
  TESSERA_RADIUS_HOST: z.string().min(1).default("127.0.0.1"),
  /** UDP port of the RADIUS server (RFC 2865: 1812); 0 picks a free one, "off" runs none. @default 1812 */
  TESSERA_RADIUS_PORT: z.union([z.literal("off"), z.coerce.number().int().min(0).max(65535)]).default(1812),
  /** Largest request body the HTTP server accepts, in bytes. @default 10485760 */
  TESSERA_BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).default(10 * 1024 * 1024),
  /** Lifetime of an operator console/API session from `createSession`, in seconds. @default 43200 */
  TESSERA_SESSION_TTL_SECONDS: z.coerce.number().int().min(60).default(12 * 3600),
  /** Log level: fatal, error, warn, info, debug, trace or silent. @default info */
  TESSERA_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /**
   * SMTP server for outgoing mail (enrollment emails), `smtp://user:pass@host:587` (STARTTLS when the
   * server offers it) or `smtps://user:pass@host:465` (TLS from the start). Without it mail stays in
   * the outbox, readable through `listOutbox` and `tessera mail outbox`. @default (none: outbox only)
   */
  TESSERA_SMTP_URL: z.string().regex(/^smtps?:\/\/[^\s]+$/, "must be an smtp:// or smtps:// URL").optional(),
  /** Sender of outgoing mail, an address or `Name <address>`. @default Tessera <no-reply@localhost> */
  TESSERA_MAIL_FROM: z.string().trim().min(3).default("Tessera <no-reply@localhost>"),
  /** Contact that push services may use about this server's Web Push messages (RFC 8292): mailto: or https:. @default mailto: the address of TESSERA_MAIL_FROM */
  TESSERA_WEB_PUSH_SUBJECT: z.string().regex(/^(mailto:\S+@\S+|https:\/\/\S+)$/, "must be a mailto: or https: URL").optional(),
  /**
   * Push services Web Push messages may go to, comma separated host names (port 443, or `host:port`); `*.` matches any subdomain.
   * A device names its push service, so this keeps the server from posting anywhere else.
   * @default fcm.googleapis.com,updates.push.services.mozilla.com,*.push.apple.com,*.notify.windows.com
   */
  TESSERA_WEB_PUSH_HOSTS: z.string().min(1).default(DEFAULT_WEB_PUSH_HOSTS.join(",")),
  /** HTTP proxy for reaching push services (`http://proxy:3128`); the proxy is asked to CONNECT. @default (none: direct) */
  TESSERA_WEB_PUSH_PROXY: z.url({ protocol: /^https?$/ }).optional(),
  /** Extra certificate authorities (PEM file) to trust for push services, e.g. behind a TLS-inspecting proxy. @default (none: the system's) */
  TESSERA_WEB_PUSH_CA_FILE: z.string().min(1).optional(),
  /** Optional env file (KEY=value lines) read before the environment; the environment wins. @default (none) */
  TESSERA_ENV_FILE: z.string().optional(),
});

export type Environment = z.infer<typeof environmentSchema>;

export interface Config {
  dataDir: string;
  http: { host: string; port: number; bodyLimitBytes: number };
  /** Null when RADIUS is off. */
  radius: { host: string; port: number } | null;
  publicUrl: string;
  database: { kind: "sqlite"; file: string } | { kind: "postgres"; url: string };
  masterKey: { fromEnvironment: string | undefined; previous: string[]; keyFile: string };
  sessionTtlSeconds: number;
  logLevel: Environment["TESSERA_LOG_LEVEL"];
  /** Outgoing mail: without an SMTP URL mail is kept in the outbox for operators to read. */
  mail: { smtpUrl: string | undefined; from: string };
  webPush: { subject: string; allowedHosts: string[]; caFile?: string; proxy?: string };
}

export const documentedOptions = Object.keys(environmentSchema.shape);

/** Reads KEY=value lines; blank lines and lines starting with # are skipped. */
export function parseEnvFile(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const equals = line.indexOf("=");
    if (equals <= 0) throw new ConfigError(`env file line is not KEY=value: ${line}`);
    let value = line.slice(equals + 1).trim();
    if (/^(["']).*\1$/.test(value)) value = value.slice(1, -1);
    values[line.slice(0, equals).trim()] = value;
  }
  return values;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

export function loadConfig(environment: NodeJS.ProcessEnv = process.env): Config {
  let merged: Record<string, string | undefined> = { ...environment };
  if (environment.TESSERA_ENV_FILE) {
    merged = { ...parseEnvFile(readFileSync(environment.TESSERA_ENV_FILE, "utf8")), ...environment };
  }
  // Empty strings mean "unset", as in most shells' `VAR= command`.
  for (const [key, value] of Object.entries(merged)) if (value === "") delete merged[key];
  const parsed = environmentSchema.safeParse(merged);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join("; ")}`);
  }
  const env = parsed.data;
  const dataDir = path.resolve(env.TESSERA_DATA_DIR);
  const publicHost = env.TESSERA_HTTP_HOST === "0.0.0.0" ? "127.0.0.1" : env.TESSERA_HTTP_HOST;
  return {
    dataDir,
    http: { host: env.TESSERA_HTTP_HOST, port: env.TESSERA_HTTP_PORT, bodyLimitBytes: env.TESSERA_BODY_LIMIT_BYTES },
    radius: env.TESSERA_RADIUS_PORT === "off" ? null : { host: env.TESSERA_RADIUS_HOST, port: env.TESSERA_RADIUS_PORT },
    publicUrl: (env.TESSERA_PUBLIC_URL ?? `http://${publicHost}:${env.TESSERA_HTTP_PORT}`).replace(/\/$/, ""),
    database: env.DATABASE_URL
      ? { kind: "postgres", url: env.DATABASE_URL }
      : { kind: "sqlite", file: path.join(dataDir, "tessera.db") },
    masterKey: {
      fromEnvironment: env.TESSERA_MASTER_KEY,
      previous: (env.TESSERA_PREVIOUS_MASTER_KEYS ?? "").split(",").map((key) => key.trim()).filter(Boolean),
      keyFile: path.join(dataDir, "master.keys"),
    },
    sessionTtlSeconds: env.TESSERA_SESSION_TTL_SECONDS,
    logLevel: env.TESSERA_LOG_LEVEL,
    mail: { smtpUrl: env.TESSERA_SMTP_URL, from: env.TESSERA_MAIL_FROM },
    webPush: {
      subject: env.TESSERA_WEB_PUSH_SUBJECT ?? `mailto:${/<([^>]+)>/.exec(env.TESSERA_MAIL_FROM)?.[1] ?? env.TESSERA_MAIL_FROM}`,
      allowedHosts: env.TESSERA_WEB_PUSH_HOSTS.split(",").map((host) => host.trim().toLowerCase()).filter(Boolean),
      ...(env.TESSERA_WEB_PUSH_CA_FILE ? { caFile: path.resolve(env.TESSERA_WEB_PUSH_CA_FILE) } : {}),
      ...(env.TESSERA_WEB_PUSH_PROXY ? { proxy: env.TESSERA_WEB_PUSH_PROXY } : {}),
    },
  };
}
