import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TesseraError } from "../../errors.js";
import { createTestCore, describeEachDatabase, type TestCore } from "../../testing/databases.js";
import { createTenant, placeTokenInState, type TestTenant } from "../../testing/fixtures.js";
import { installerPrincipal } from "../operators/access.js";
import { planAction, tokenActions, tokenStates, type TokenState } from "./lifecycle.js";

describe("the lifecycle table", () => {
  it("matches DESIGN section 2 for every action", () => {
    expect(tokenActions).toMatchObject({
      provision: { from: ["inventory"], to: "assigned" },
      enroll: { from: ["assigned"], to: "active" },
      cancelProvisioning: { from: ["assigned"], to: "inventory" },
      suspend: { from: ["active", "locked"], to: "suspended" },
      reactivate: { from: ["suspended"], to: "active" },
      lock: { from: ["active"], to: "locked" },
      unlock: { from: ["locked"], to: "active" },
      revokeToInventory: { from: ["assigned", "active", "suspended", "locked"], to: "inventory" },
      revokeAsLost: { from: ["assigned", "active", "suspended", "locked"], to: "lost" },
      reinitialize: { from: ["lost"], to: "inventory" },
      delete: { from: ["lost"], to: null },
    });
  });

  it("never lets a lost or inventory token become active without passing through assignment", () => {
    for (const action of Object.keys(tokenActions) as Array<keyof typeof tokenActions>) {
      for (const from of ["lost", "inventory"] as const) {
        const plan = planAction(action, from);
        if (plan.ok) expect(plan.to).not.toBe("active");
      }
    }
  });
});

type OperatorAction = "suspend" | "reactivate" | "unlock" | "revokeToInventory" | "revokeAsLost" | "reinitialize" | "delete";

const expected: Record<OperatorAction, Partial<Record<TokenState, TokenState | "deleted">>> = {
  suspend: { active: "suspended", locked: "suspended" },
  reactivate: { suspended: "active" },
  unlock: { locked: "active" },
  revokeToInventory: { assigned: "inventory", active: "inventory", suspended: "inventory", locked: "inventory" },
  revokeAsLost: { assigned: "lost", active: "lost", suspended: "lost", locked: "lost" },
  reinitialize: { lost: "inventory" },
  delete: { lost: "deleted" },
};

describeEachDatabase("token actions from every state", (kind) => {
  let core: TestCore;
  let tenant: TestTenant;
  beforeAll(async () => {
    core = await createTestCore(kind);
    tenant = await createTenant(core.services, "lifecycle");
  });
  afterAll(async () => core.close());

  function run(action: OperatorAction, serial: string) {
    const lifecycle = core.services.tokenLifecycle;
    const principal = tenant.principals.operator;
    switch (action) {
      case "suspend":
        return lifecycle.suspend(principal, serial, "test");
      case "reactivate":
        return lifecycle.reactivate(principal, serial, "test");
      case "unlock":
        return lifecycle.unlock(principal, serial, "test");
      case "revokeToInventory":
        return lifecycle.revoke(principal, serial, { to: "inventory", reason: "left the company" });
      case "revokeAsLost":
        return lifecycle.revoke(principal, serial, { to: "lost", reason: "phone stolen" });
      case "reinitialize":
        return lifecycle.reinitialize(principal, serial, { reason: "found again" });
      case "delete":
        return lifecycle.delete(principal, serial, "scrapped");
    }
  }

  const snapshot = async (serial: string) => {
    const { db } = core.storage;
    await core.services.audit.settle();
    return {
      token: await db.selectFrom("tokens").selectAll().where("serial", "=", serial).executeTakeFirst(),
      device: await db.selectFrom("devices").selectAll().where("token_serial", "=", serial).executeTakeFirst(),
      audit: await db.selectFrom("audit_log").select("seq").where("token_serial", "=", serial).execute(),
    };
  };

  for (const action of Object.keys(expected) as OperatorAction[]) {
    for (const from of tokenStates) {
      const to = expected[action][from];
      if (to) {
        it(`${action} moves a ${from} token to ${to} and audits it`, async () => {
          const serial = await placeTokenInState(core.services, tenant.virtualServerId, from);
          await run(action, serial);
          const after = await snapshot(serial);
          if (to === "deleted") {
            expect(after.token).toBeUndefined();
          } else {
            expect(after.token?.state).toBe(to);
          }
          await core.services.audit.settle();
          const record = await core.storage.db
            .selectFrom("audit_log")
            .selectAll()
            .where("token_serial", "=", serial)
            .orderBy("seq", "desc")
            .executeTakeFirstOrThrow();
          expect(record).toMatchObject({ action: `token.${action}`, from_state: from, to_state: to === "deleted" ? null : to, actor: tenant.principals.operator.actor });
        });
      } else {
        it(`${action} refuses a ${from} token with TOKEN_STATE_CONFLICT and changes nothing`, async () => {
          const serial = await placeTokenInState(core.services, tenant.virtualServerId, from);
          const before = await snapshot(serial);
          const error = await run(action, serial).then(
            () => null,
            (caught: unknown) => caught,
          );
          expect(error).toBeInstanceOf(TesseraError);
          expect((error as TesseraError).code).toBe("TOKEN_STATE_CONFLICT");
          expect((error as TesseraError).status).toBe(409);
          expect(await snapshot(serial)).toEqual(before);
        });
      }
    }
  }

  it("revoking to inventory unbinds the user, destroys an issued key and the device, and the token can be found in inventory again", async () => {
    const serial = await placeTokenInState(core.services, tenant.virtualServerId, "active", { userId: "leaver" });
    const token = await core.services.tokenLifecycle.revoke(tenant.principals.helpdesk, serial, { to: "inventory", reason: "left" });
    expect(token).toMatchObject({ state: "inventory", user: null, device: null, hasKey: false, stateReason: "left" });
    const page = await core.services.tokens.list(installerPrincipal, { virtualServerId: tenant.virtualServerId, state: "inventory", serialPrefix: serial, limit: 5 });
    expect(page.items.map((t) => t.serial)).toEqual([serial]);
  });

  it("revoking a hardware token to inventory keeps its seed, and losing it destroys the seed", async () => {
    const seed = { secret: Buffer.alloc(20, 9), otpMode: "hotp" as const, digits: 6 as const, periodSeconds: 30, algorithm: "SHA1" as const, counter: 41 };
    await core.services.tokens.importSeeds(installerPrincipal, { virtualServerId: tenant.virtualServerId, seeds: [{ serial: "HW-KEEP-1", ...seed }, { serial: "HW-LOSE-1", ...seed }] });
    const { db } = core.storage;
    const user = await core.services.users.create(installerPrincipal, tenant.virtualServerId, { userId: "hw-holder", firstName: "", lastName: "", email: "", groups: [] });
    const userRow = await db.selectFrom("users").select("id").where("user_id", "=", user.userId).where("virtual_server_id", "=", tenant.virtualServerId).executeTakeFirstOrThrow();
    await db.updateTable("tokens").set({ state: "active", user_pk: userRow.id }).where("serial", "in", ["HW-KEEP-1", "HW-LOSE-1"]).execute();

    const kept = await core.services.tokenLifecycle.revoke(tenant.principals.operator, "HW-KEEP-1", { to: "inventory", reason: "returned" });
    expect(kept).toMatchObject({ state: "inventory", hasKey: true, user: null });
    const keptRow = await db.selectFrom("tokens").selectAll().where("serial", "=", "HW-KEEP-1").executeTakeFirstOrThrow();
    expect(keptRow.hotp_counter).toBe(41);
    expect(core.services.keyring.decrypt(keptRow.key_ciphertext!, keptRow.key_id!, "HW-KEEP-1")).toEqual(seed.secret);

    const lost = await core.services.tokenLifecycle.revoke(tenant.principals.operator, "HW-LOSE-1", { to: "lost", reason: "broken" });
    expect(lost).toMatchObject({ state: "lost", hasKey: false });
    const refused = await core.services.tokenLifecycle.reinitialize(tenant.principals.operator, "HW-LOSE-1", {}).catch((e: TesseraError) => e);
    expect((refused as TesseraError).code).toBe("HARDWARE_SEED_REQUIRED");
    expect((await core.services.tokens.get(installerPrincipal, "HW-LOSE-1")).state).toBe("lost");
    const renewed = await core.services.tokenLifecycle.reinitialize(tenant.principals.operator, "HW-LOSE-1", { seed: { ...seed, secret: Buffer.alloc(20, 5), counter: 0 } });
    expect(renewed).toMatchObject({ state: "inventory", hasKey: true });
  });

  it("unlock clears the failure count", async () => {
    const serial = await placeTokenInState(core.services, tenant.virtualServerId, "locked");
    const token = await core.services.tokenLifecycle.unlock(tenant.principals.helpdesk, serial);
    expect(token).toMatchObject({ state: "active", failures: 0, lockedUntil: null });
  });

  it("lets exactly one of two concurrent revokes of the same token win", async () => {
    const serial = await placeTokenInState(core.services, tenant.virtualServerId, "active");
    const results = await Promise.allSettled([
      core.services.tokenLifecycle.revoke(tenant.principals.operator, serial, { to: "inventory", reason: "first" }),
      core.services.tokenLifecycle.revoke(tenant.principals.operator, serial, { to: "lost", reason: "second" }),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const rejected = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect((rejected.reason as TesseraError).code).toBe("TOKEN_STATE_CONFLICT");
    await core.services.audit.settle();
    const audits = await core.storage.db.selectFrom("audit_log").select("action").where("token_serial", "=", serial).execute();
    expect(audits.filter((a) => a.action.startsWith("token.revoke"))).toHaveLength(1);
  });
});
