import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../config.js";
import { createMailTransport } from "./transport.js";

describe("mail configuration and transport", () => {
  it("keeps mail in the outbox by default, from Tessera <no-reply@localhost>", () => {
    const config = loadConfig({});
    expect(config.mail).toEqual({ smtpUrl: undefined, from: "Tessera <no-reply@localhost>" });
    expect(createMailTransport(config.mail)).toBeNull();
  });

  it("reads TESSERA_SMTP_URL and TESSERA_MAIL_FROM", () => {
    const config = loadConfig({ TESSERA_SMTP_URL: "smtps://user:secret@mail.example.com:465", TESSERA_MAIL_FROM: "Acme IT <it@acme.example>" });
    expect(config.mail).toEqual({ smtpUrl: "smtps://user:secret@mail.example.com:465", from: "Acme IT <it@acme.example>" });
  });

  it("refuses a URL that is not smtp:// or smtps:// without repeating its password", () => {
    expect(() => loadConfig({ TESSERA_SMTP_URL: "https://user:hunter2@mail.example.com" })).toThrow(ConfigError);
    try {
      loadConfig({ TESSERA_SMTP_URL: "https://user:hunter2@mail.example.com" });
    } catch (error) {
      expect((error as Error).message).toMatch(/TESSERA_SMTP_URL/);
      expect((error as Error).message).not.toContain("hunter2");
    }
  });

  it("builds a pooled transport, with TLS from the start for smtps://", () => {
    const plain = createMailTransport({ smtpUrl: "smtp://user:pass@127.0.0.1:2525", from: "x@example.com" })!;
    const tls = createMailTransport({ smtpUrl: "smtps://user:pass@127.0.0.1:4650", from: "x@example.com" })!;
    try {
      expect(plain.transporter.name).toBe("SMTP (pool)");
      const plainOptions = plain.options as { secure?: boolean; maxConnections?: number; auth?: { user?: string } };
      const tlsOptions = tls.options as { secure?: boolean };
      expect(plainOptions).toMatchObject({ maxConnections: 5, auth: { user: "user" } });
      expect(plainOptions.secure).toBeFalsy();
      expect(tlsOptions.secure).toBe(true);
    } finally {
      plain.close();
      tls.close();
    }
  });
});
