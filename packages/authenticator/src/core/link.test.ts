import { describe, expect, it } from "vitest";
import { parseEnrollmentLink } from "./link.js";

const CODE = "KZXW6YTBOI5WQZLMMFXGKY3PNV";

describe("auto-enrollment links", () => {
  it.each([
    [`https://mfa.example.com/app/#/enroll?code=${CODE}`, "https://mfa.example.com"],
    [`https://mfa.example.com/enroll/${CODE}`, "https://mfa.example.com"],
    [`https://example.com/tessera/enroll/${CODE.toLowerCase()}`, "https://example.com/tessera"],
    [`tessera://enroll?server=${encodeURIComponent("https://mfa.example.com")}&code=${CODE}`, "https://mfa.example.com"],
    [`http://127.0.0.1:8080/app/#/enroll?code=${CODE}`, "http://127.0.0.1:8080"],
  ])("reads %s", (link, server) => {
    expect(parseEnrollmentLink(link)).toEqual({ ok: true, value: { server, code: CODE } });
  });

  it.each(["not a link", "https://mfa.example.com/app/", "ftp://mfa.example.com/enroll/ABC", `https://mfa.example.com/enroll/${CODE}1`])("refuses %s", (link) => {
    expect(parseEnrollmentLink(link).ok).toBe(false);
  });
});
