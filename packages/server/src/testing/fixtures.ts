import type { Services } from "../core.js";
import { installerPrincipal, type Principal, type Role } from "../modules/operators/access.js";
import type { TokenState } from "../modules/tokens/lifecycle.js";
import type { ChallengeRow } from "../storage/schema.js";

/** A tenant for tests: a virtual server with one operator principal per role. */
export interface TestTenant {
  virtualServerId: string;
  path: string;
  principals: Record<Role, Principal>;
  apiKeys: Record<Role, string>;
}

export async function createTenant(
  services: Services,
  name: string,
  options: { parentId?: string; capacity?: number | null } = {},
): Promise<TestTenant> {
  const vs = await services.virtualServers.create(installerPrincipal, { name, parentId: options.parentId, capacity: options.capacity ?? null });
  const row = await services.storage.db.selectFrom("virtual_servers").select("path").where("id", "=", vs.id).executeTakeFirstOrThrow();
  const principals = {} as Record<Role, Principal>;
  const apiKeys = {} as Record<Role, string>;
  for (const role of ["admin", "operator", "helpdesk", "auditor"] as const) {
    const email = `${role}@${vs.id}.test`;
    const operator = await services.operators.create(installerPrincipal, {
      email,
      name: `${role} of ${name}`,
      role,
      virtualServerId: vs.id,
      scopeIncludesChildren: role === "admin",
    });
    apiKeys[role] = (await services.operators.createApiKey(installerPrincipal, operator.id, "test")).apiKey;
    principals[role] = {
      kind: "operator",
      operatorId: operator.id,
      actor: `operator:${email}`,
      role,
      scope: { virtualServerId: vs.id, path: row.path, includesChildren: role === "admin" },
    };
  }
  return { virtualServerId: vs.id, path: row.path, principals, apiKeys };
}

/**
 * Puts a token straight into a state, with a user and a device where that state has
 * them, for tests of what each action does from each state. Provisioning and
 * enrollment have their own flows; this only arranges the starting point.
 */
export async function placeTokenInState(
  services: Services,
  virtualServerId: string,
  state: TokenState,
  options: { type?: "mobile" | "email"; userId?: string } = {},
): Promise<string> {
  const { db } = services.storage;
  const { serials } = await services.tokens.add(installerPrincipal, { virtualServerId, type: options.type ?? "mobile", count: 1 });
  const serial = serials[0]!;
  if (state === "inventory") return serial;
  const userId = options.userId ?? `holder-${serial.toLowerCase()}`;
  let user = await db.selectFrom("users").select("id").where("virtual_server_id", "=", virtualServerId).where("user_id", "=", userId).executeTakeFirst();
  if (!user) {
    await services.users.create(installerPrincipal, virtualServerId, { userId, firstName: "Test", lastName: "Holder", email: `${userId}@example.test`, groups: [] });
    user = await db.selectFrom("users").select("id").where("virtual_server_id", "=", virtualServerId).where("user_id", "=", userId).executeTakeFirstOrThrow();
  }
  const key = services.keyring.encrypt(Buffer.alloc(20, 1), serial);
  const held = state !== "lost";
  await db
    .updateTable("tokens")
    .set({
      state,
      user_pk: held ? user.id : null,
      key_ciphertext: held && state !== "assigned" ? key.ciphertext : null,
      key_id: held && state !== "assigned" ? key.keyId : null,
      failures: state === "locked" ? 3 : 0,
    })
    .where("serial", "=", serial)
    .execute();
  if (["active", "suspended", "locked"].includes(state)) {
    await db
      .insertInto("devices")
      .values({
        token_serial: serial,
        app: "tessera",
        target: "Android 15",
        device_type: "phone",
        app_version: "1.0.0",
        push_at_enrollment: "enabled",
        push_now: "enabled",
        enrolled_at: services.clock.nowMs(),
        updated_at: services.clock.nowMs(),
      })
      .execute();
  }
  return serial;
}

/**
 * A push challenge as a push login opens it, pending, whose time ran out a moment before
 * `nowMs` (for the expiry sweep), with no device to tell.
 */
export function expiredChallengeRow(input: { id: string; virtualServerId: string; applicationId: string; userPk: string; nowMs: number }): ChallengeRow {
  return {
    id: input.id,
    virtual_server_id: input.virtualServerId,
    application_id: input.applicationId,
    user_pk: input.userPk,
    device_ids: "[]",
    resource_name: "Staff portal",
    source: "198.51.100.1",
    number_to_match: "10",
    status: "pending",
    answered_serial: null,
    created_at: input.nowMs - 60_000,
    expires_at: input.nowMs - 1,
    answered_at: null,
    redeemed_at: null,
    end_push_owed: 0,
    wake_push_owed: 0,
    wake_owed_devices: null,
  };
}
