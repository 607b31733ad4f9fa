/** Where an auto-enrollment link points: the Tessera server and the enrollment code. */
export interface EnrollmentLink {
  server: string;
  code: string;
}

const CODE = /^[A-Z2-7]{26}$/;

/**
 * Reads the links the self-enrollment page and mail hand out:
 * `https://host/app/#/enroll?code=...` (the web app), `https://host/enroll/CODE` (the page
 * itself) and `tessera://enroll?server=https%3A%2F%2Fhost&code=...` (an installed app).
 */
export function parseEnrollmentLink(link: string): { ok: true; value: EnrollmentLink } | { ok: false; problem: string } {
  let url: URL;
  try {
    url = new URL(link.trim());
  } catch {
    return { ok: false, problem: "not a link" };
  }
  let server: string | null = null;
  let code: string | null = null;
  if (url.protocol === "tessera:") {
    server = url.searchParams.get("server");
    code = url.searchParams.get("code");
  } else if (url.protocol === "https:" || url.protocol === "http:") {
    const page = /\/enroll\/([A-Za-z2-7]+)\/?$/.exec(url.pathname);
    const hash = /[?&]code=([A-Za-z2-7]+)/.exec(url.hash);
    code = page?.[1] ?? hash?.[1] ?? url.searchParams.get("code");
    const base = page ? url.pathname.slice(0, page.index) : url.pathname.replace(/\/app\/?$/, "").replace(/\/$/, "");
    server = `${url.origin}${base}`;
  } else {
    return { ok: false, problem: `links of ${url.protocol} cannot enroll` };
  }
  code = code?.toUpperCase() ?? null;
  if (!server || !code || !CODE.test(code)) return { ok: false, problem: "the link holds no enrollment code" };
  return { ok: true, value: { server: server.replace(/\/$/, ""), code } };
}
