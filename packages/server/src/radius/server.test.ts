import { createSocket } from "node:dgram";
import { describe, expect, it } from "vitest";
import { Attribute } from "./attributes.js";
import { decodePacket, firstAttribute } from "./codec.js";
import { decryptUserPassword, verifyRequestMessageAuthenticator } from "./crypto.js";
import { radclient, radclientStatus, startTestServer, TEST_SECRET, type RadclientRun } from "./testing.js";

/**
 * The server against FreeRADIUS's radclient (Debian's freeradius-utils): a real NAS
 * implementation computes the request's Message-Authenticator and PAP password, and checks
 * our Response Authenticator and Message-Authenticator itself ("Reply verification failed:
 * ... invalid ..." otherwise).
 */

const MESSAGE_AUTHENTICATOR = "Message-Authenticator = 0x00\n";

/** The attributes radclient printed for the reply, or null when there was none. */
function received(run: RadclientRun): { code: string; attributes: string } | null {
  const match = /Received (Access-\w+) Id \d+ .*\n((?:\t.*\n?)*)/.exec(run.stdout);
  return match ? { code: match[1]!, attributes: match[2]! } : null;
}

function expectNoComplaint(run: RadclientRun) {
  expect(`${run.stdout}\n${run.stderr}`).not.toMatch(/invalid|failed|error/i);
}

describe("RADIUS server with radclient", () => {
  it("answers alice's right password with Access-Accept, Message-Authenticator first", async () => {
    const { port, calls } = await startTestServer();
    const run = await radclient(port, TEST_SECRET, `User-Name = "alice"\nUser-Password = "123456"\nNAS-Identifier = "vpn-1"\n${MESSAGE_AUTHENTICATOR}`);
    expectNoComplaint(run);
    expect(run.exitCode).toBe(0);
    const reply = received(run);
    expect(reply?.code).toBe("Access-Accept");
    expect(reply?.attributes.split("\n")[0]).toMatch(/^\tMessage-Authenticator = 0x[0-9a-f]{32}$/);
    expect(reply?.attributes).toContain('Reply-Message = "Welcome, alice"');
    expect(reply?.attributes).toContain("Session-Timeout = 3600");
    expect(calls).toMatchObject([{ clientId: "vpn", userName: "alice", password: "123456", nasIdentifier: "vpn-1", source: { address: "127.0.0.1" } }]);
  });

  it("answers radclient's Status-Server with Access-Accept", async () => {
    const { port, server } = await startTestServer();
    const run = await radclientStatus(port, TEST_SECRET);
    expectNoComplaint(run);
    expect(run.exitCode).toBe(0);
    expect(received(run)?.code).toBe("Access-Accept");
    expect(received(run)?.attributes.split("\n")[0]).toMatch(/^\tMessage-Authenticator = 0x[0-9a-f]{32}$/);
    expect(server.stats()).toMatchObject({ requests: 1, statusAnswers: 1, accepts: 0 });
  });

  it("answers a wrong password with Access-Reject", async () => {
    const { port, server } = await startTestServer();
    const run = await radclient(port, TEST_SECRET, `User-Name = "alice"\nUser-Password = "654321"\n${MESSAGE_AUTHENTICATOR}Response-Packet-Type = Access-Reject\n`);
    expectNoComplaint(run);
    expect(run.exitCode).toBe(0);
    expect(received(run)?.code).toBe("Access-Reject");
    expect(received(run)?.attributes).toMatch(/^\tMessage-Authenticator = 0x[0-9a-f]{32}/);
    expect(server.stats()).toMatchObject({ requests: 1, rejects: 1, dropped: 0 });
  });

  it("does not answer a request signed with the wrong shared secret", async () => {
    const { port, server, calls } = await startTestServer();
    const run = await radclient(port, "not-the-secret", `User-Name = "alice"\nUser-Password = "123456"\n${MESSAGE_AUTHENTICATOR}`);
    expect(run.exitCode).not.toBe(0);
    expect(run.stdout + run.stderr).toMatch(/no reply/i);
    expect(received(run)).toBeNull();
    expect(calls).toEqual([]);
    expect(server.stats()).toMatchObject({ badAuthenticator: 1, dropped: 1 });
  });

  it("does not answer a request without Message-Authenticator", async () => {
    const { port, server, calls } = await startTestServer();
    const run = await radclient(port, TEST_SECRET, `User-Name = "alice"\nUser-Password = "123456"\n`);
    expect(run.exitCode).not.toBe(0);
    expect(run.stdout + run.stderr).toMatch(/no reply/i);
    expect(calls).toEqual([]);
    expect(server.stats()).toMatchObject({ badAuthenticator: 1, dropped: 1 });
  });

  it("answers an empty password with Access-Challenge and State, and accepts when the State comes back", async () => {
    const { port, calls } = await startTestServer();
    // radclient leaves an empty User-Password out altogether; the server reads that as empty.
    const first = await radclient(port, TEST_SECRET, `User-Name = "push"\nUser-Password = ""\n${MESSAGE_AUTHENTICATOR}Response-Packet-Type = Access-Challenge\n`);
    expectNoComplaint(first);
    expect(first.exitCode).toBe(0);
    const challenge = received(first);
    expect(challenge?.code).toBe("Access-Challenge");
    expect(challenge?.attributes.split("\n")[0]).toMatch(/^\tMessage-Authenticator = 0x/);
    expect(challenge?.attributes).toContain('Reply-Message = "Approve the login on your phone"');
    const state = /State = (0x[0-9a-f]+)/.exec(challenge?.attributes ?? "")?.[1];
    expect(state).toBe(`0x${Buffer.from("push-1").toString("hex")}`);

    const second = await radclient(port, TEST_SECRET, `User-Name = "push"\nState = ${state}\n${MESSAGE_AUTHENTICATOR}`);
    expectNoComplaint(second);
    expect(received(second)?.code).toBe("Access-Accept");
    expect(calls.map((call) => call.state?.toString() ?? null)).toEqual([null, "push-1"]);
  });

  it("answers CHAP with Access-Reject 'PAP only', without asking authenticate", async () => {
    const { port, calls } = await startTestServer();
    const run = await radclient(port, TEST_SECRET, `User-Name = "alice"\nCHAP-Password = "123456"\n${MESSAGE_AUTHENTICATOR}Response-Packet-Type = Access-Reject\n`);
    expectNoComplaint(run);
    expect(received(run)?.code).toBe("Access-Reject");
    expect(received(run)?.attributes).toContain('Reply-Message = "PAP only"');
    expect(calls).toEqual([]);
  });

  it("verifies radclient's own Message-Authenticator and decrypts its PAP password", async () => {
    // A bare socket stands in for the server: it keeps radclient's request and does not answer.
    const socket = createSocket("udp4");
    const captured: Buffer[] = [];
    socket.on("message", (message) => captured.push(message));
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    try {
      await radclient(socket.address().port, TEST_SECRET, `User-Name = "nemo"\nUser-Password = "arctangent and more than 16"\n${MESSAGE_AUTHENTICATOR}`);
    } finally {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    }
    const request = captured[0];
    if (!request) throw new Error("radclient sent nothing");
    expect(verifyRequestMessageAuthenticator(request, Buffer.from(TEST_SECRET))).toEqual({ ok: true });
    expect(verifyRequestMessageAuthenticator(request, Buffer.from("other")).ok).toBe(false);
    const decoded = decodePacket(request);
    if (!decoded.ok) throw new Error(decoded.reason);
    const hidden = firstAttribute(decoded.packet, Attribute.UserPassword);
    const password = hidden && decryptUserPassword(hidden, Buffer.from(TEST_SECRET), decoded.packet.authenticator);
    expect(password?.ok && password.password.toString()).toBe("arctangent and more than 16");
  });
});
