import { randomBytes } from "node:crypto";
import { hash as argon2Hash } from "@node-rs/argon2";
import type { Services } from "../core.js";
import { installerPrincipal } from "../modules/operators/access.js";
import { bootstrap, newPassword } from "./bootstrap.js";

export const DEMO_ADMIN_EMAIL = "admin@demo.tessera.test";
const DEMO_NAME = "Demo Organisation";

const people = [
  ["alice", "Alice", "Archer"], ["bob", "Bob", "Baker"], ["carol", "Carol", "Chen"], ["dave", "Dave", "Dias"],
  ["erin", "Erin", "Evans"], ["frank", "Frank", "Fischer"], ["grace", "Grace", "Garcia"], ["heidi", "Heidi", "Hansen"],
  ["ivan", "Ivan", "Ivanov"], ["judy", "Judy", "Jones"], ["mallory", "Mallory", "Moore"], ["niaj", "Niaj", "Nair"],
  ["olivia", "Olivia", "Ortiz"], ["peggy", "Peggy", "Park"], ["rupert", "Rupert", "Rossi"], ["sybil", "Sybil", "Silva"],
  ["trent", "Trent", "Tanaka"], ["victor", "Victor", "Varga"], ["walter", "Walter", "Weber"], ["yvonne", "Yvonne", "Young"],
] as const;

/**
 * Demo data for the quick start: a service provider with one child, users in groups,
 * mobile, email and hardware tokens. Run on a database that already has it, it only
 * gives the demo admin a new one-time password.
 */
export async function ensureDemo(services: Services): Promise<{ email: string; password: string; virtualServerId: string; created: boolean }> {
  const { db } = services.storage;
  const existing = await db.selectFrom("operators").select(["id", "virtual_server_id"]).where("email", "=", DEMO_ADMIN_EMAIL).executeTakeFirst();
  if (existing) {
    const password = newPassword();
    await db.updateTable("operators").set({ password_hash: await argon2Hash(password) }).where("id", "=", existing.id).execute();
    return { email: DEMO_ADMIN_EMAIL, password, virtualServerId: existing.virtual_server_id, created: false };
  }
  const result = await bootstrap(services, { name: DEMO_NAME, email: DEMO_ADMIN_EMAIL, capacity: null });
  const principal = installerPrincipal;
  const child = await services.virtualServers.create(principal, { name: "Demo Branch Office", parentId: result.virtualServerId, capacity: 50 });
  const csv = [
    "userId,firstName,lastName,email,groups",
    ...people.map(([id, first, last], i) => `${id},${first},${last},${id}@demo.tessera.test,${i % 3 === 0 ? "vpn;staff" : "staff"}`),
  ].join("\n");
  await services.importUsers(principal, result.virtualServerId, csv);
  await services.tokens.add(principal, { virtualServerId: result.virtualServerId, type: "mobile", count: 40 });
  await services.tokens.add(principal, { virtualServerId: result.virtualServerId, type: "email", count: 10 });
  await services.tokens.importSeeds(principal, {
    virtualServerId: result.virtualServerId,
    seeds: Array.from({ length: 5 }, (_, i) => ({
      serial: `DEMO-HW-${String(i + 1).padStart(4, "0")}`,
      secret: randomBytes(20),
      otpMode: "totp" as const,
      digits: 6 as const,
      periodSeconds: 30,
      algorithm: "SHA1" as const,
      counter: 0,
    })),
  });
  await services.tokens.move(principal, { fromVirtualServerId: result.virtualServerId, toVirtualServerId: child.id, type: "mobile", count: 10 }, "allocate");
  // A provisioning task, so that the outbox holds enrollment mail to try the self-enrollment page with.
  await services.provisioning.createTask(principal, { virtualServerId: result.virtualServerId, users: { group: "vpn" }, tokenType: "mobile" });
  return { email: result.operatorEmail, password: result.password, virtualServerId: result.virtualServerId, created: true };
}
