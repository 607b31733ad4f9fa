import type { Transaction } from "kysely";
import type { CoreDeps } from "../../deps.js";
import { fail } from "../../errors.js";
import type { Database, NewToken } from "../../storage/schema.js";
import { canSee, requirePermission, type Principal } from "../operators/access.js";
import { effectivePolicy } from "../policy/service.js";
import { decodeTextCursor, encodeTextCursor } from "../users/service.js";
import { findVisibleVirtualServer } from "../virtual-servers/service.js";
import { isTokenState, type TokenState } from "./lifecycle.js";
import type { ImportedSeed } from "./seed-files/seed.js";
import { reserveSerials, serialProblem } from "./serial.js";
import { selectTokenViews, toToken, type PushOtpState, type Token } from "./token.js";
import type { GeneratedTokenType, TokenType } from "./types.js";

export interface TokenSearch {
  virtualServerId: string;
  /** Serials starting with this text. */
  serialPrefix?: string;
  state?: TokenState;
  type?: TokenType;
  /** The user id (login name) of the holder. */
  userId?: string;
  app?: "tessera" | "otp-app";
  pushOtp?: PushOtpState;
  cursor?: string;
  limit: number;
}

/** 20 columns a token: 1000 rows a statement stays under both databases' parameter limits. */
const INSERT_CHUNK = 1000;

async function insertTokens(trx: Transaction<Database>, rows: NewToken[]): Promise<void> {
  for (let i = 0; i < rows.length; i += INSERT_CHUNK) await trx.insertInto("tokens").values(rows.slice(i, i + INSERT_CHUNK)).execute();
}

async function countTokens(trx: Transaction<Database>, virtualServerId: string): Promise<number> {
  const { count } = await trx
    .selectFrom("tokens")
    .select((eb) => eb.fn.countAll<number>().as("count"))
    .where("virtual_server_id", "=", virtualServerId)
    .executeTakeFirstOrThrow();
  return Number(count);
}

/** A virtual server with a capacity holds at most that many tokens (see docs/lifecycle.md). */
async function checkCapacity(trx: Transaction<Database>, virtualServerId: string, capacity: number | null, adding: number) {
  if (capacity === null) return;
  const wanted = (await countTokens(trx, virtualServerId)) + adding;
  if (wanted > capacity) throw fail("CAPACITY_EXCEEDED", { id: virtualServerId, capacity, wanted });
}

export function createTokenInventory(deps: Pick<CoreDeps, "db" | "clock" | "audit" | "keyring">) {
  const { db, clock, audit, keyring } = deps;

  return {
    /** Adds new tokens with generated serials to a virtual server's inventory. */
    async add(principal: Principal, input: { virtualServerId: string; type: GeneratedTokenType; count: number }) {
      return db.transaction().execute(async (trx) => {
        const vs = await findVisibleVirtualServer(trx, principal, input.virtualServerId, "tokens.manage");
        await checkCapacity(trx, vs.id, vs.capacity, input.count);
        const policy = (await effectivePolicy(trx, vs.id)).effective;
        const serials = await reserveSerials(trx, input.type, input.count);
        const now = clock.nowMs();
        await insertTokens(
          trx,
          serials.map((serial) => ({
            serial,
            virtual_server_id: vs.id,
            type: input.type,
            state: "inventory",
            user_pk: null,
            otp_mode: input.type === "email" ? "hotp" : "totp",
            algorithm: policy.otpAlgorithm,
            digits: policy.otpDigits,
            period_seconds: policy.otpPeriodSeconds,
            key_ciphertext: null,
            key_id: null,
            created_at: now,
            updated_at: now,
            state_changed_at: now,
          })),
        );
        await audit.append(trx, principal, [
          {
            action: "token.add",
            virtualServerId: vs.id,
            targetType: "token",
            toState: "inventory",
            details: { type: input.type, count: serials.length, firstSerial: serials[0], lastSerial: serials.at(-1) },
          },
        ]);
        return { count: serials.length, firstSerial: serials[0]!, lastSerial: serials.at(-1)!, serials };
      });
    },

    /**
     * Imports hardware tokens from parsed seeds: all or nothing, since a vendor's file
     * half imported is worse than one refused with every problem listed.
     */
    async importSeeds(principal: Principal, input: { virtualServerId: string; seeds: ImportedSeed[] }) {
      return db.transaction().execute(async (trx) => {
        const vs = await findVisibleVirtualServer(trx, principal, input.virtualServerId, "tokens.manage");
        await checkCapacity(trx, vs.id, vs.capacity, input.seeds.length);
        const invalid = input.seeds.filter((seed) => serialProblem(seed.serial) !== null);
        if (invalid.length > 0) {
          throw fail("SERIAL_INVALID", { serial: invalid[0]!.serial, problem: serialProblem(invalid[0]!.serial) });
        }
        const taken: string[] = [];
        for (let i = 0; i < input.seeds.length; i += INSERT_CHUNK) {
          const chunk = input.seeds.slice(i, i + INSERT_CHUNK).map((seed) => seed.serial);
          const rows = await trx.selectFrom("tokens").select("serial").where("serial", "in", chunk).execute();
          taken.push(...rows.map((row) => row.serial));
        }
        if (taken.length > 0) throw fail("SERIAL_TAKEN", { serial: taken.slice(0, 20).join(", ") }, { serials: taken });
        const now = clock.nowMs();
        await insertTokens(
          trx,
          input.seeds.map((seed) => {
            const { ciphertext, keyId } = keyring.encrypt(seed.secret, seed.serial);
            return {
              serial: seed.serial,
              virtual_server_id: vs.id,
              type: "hardware",
              state: "inventory",
              user_pk: null,
              otp_mode: seed.otpMode,
              algorithm: seed.algorithm,
              digits: seed.digits,
              period_seconds: seed.periodSeconds,
              hotp_counter: seed.counter,
              key_ciphertext: ciphertext,
              key_id: keyId,
              created_at: now,
              updated_at: now,
              state_changed_at: now,
            };
          }),
        );
        const entries = [];
        for (let i = 0; i < input.seeds.length; i += 500) {
          const serials = input.seeds.slice(i, i + 500).map((seed) => seed.serial);
          entries.push({
            action: "token.import",
            virtualServerId: vs.id,
            targetType: "token" as const,
            toState: "inventory",
            details: { type: "hardware", count: serials.length, serials },
          });
        }
        await audit.append(trx, principal, entries);
        return { count: input.seeds.length, serials: input.seeds.map((seed) => seed.serial) };
      });
    },

    async get(principal: Principal, serial: string): Promise<Token> {
      requirePermission(principal, "tokens.read");
      const problem = serialProblem(serial);
      if (problem) throw fail("SERIAL_INVALID", { serial, problem });
      const row = await selectTokenViews(db)
        .innerJoin("virtual_servers", "virtual_servers.id", "tokens.virtual_server_id")
        .select("virtual_servers.path as vs_path")
        .where("tokens.serial", "=", serial)
        .executeTakeFirst();
      if (!row || !canSee(principal, { path: row.vs_path })) throw fail("TOKEN_NOT_FOUND", { serial });
      return toToken(row);
    },

    /** One page of a virtual server's tokens, ordered by serial; the cursor is the last serial. */
    async list(principal: Principal, search: TokenSearch): Promise<{ items: Token[]; nextCursor: string | null }> {
      await findVisibleVirtualServer(db, principal, search.virtualServerId, "tokens.read");
      const after = decodeTextCursor(search.cursor);
      // The page is chosen on the tokens table alone, then joined to its users and
      // devices: joined first, PostgreSQL would merge-join the whole devices index for
      // a wide page (tens of ms at a million tokens); this way it is a few rows.
      let page = db.selectFrom("tokens").select("tokens.serial").where("tokens.virtual_server_id", "=", search.virtualServerId);
      if (after !== undefined) page = page.where("tokens.serial", ">", after);
      if (search.serialPrefix) {
        // A range, not LIKE: it uses the serial index on both databases (bytewise collation).
        page = page.where("tokens.serial", ">=", search.serialPrefix).where("tokens.serial", "<", `${search.serialPrefix}\uffff`);
      }
      if (search.state) page = page.where("tokens.state", "=", search.state);
      if (search.type) page = page.where("tokens.type", "=", search.type);
      if (search.app || search.pushOtp) {
        const { app, pushOtp } = search;
        page = page.where((eb) => {
          let device = eb.selectFrom("devices").select("devices.token_serial").whereRef("devices.token_serial", "=", "tokens.serial");
          if (app) device = device.where("devices.app", "=", app);
          if (pushOtp) device = device.where("devices.push_now", "=", pushOtp);
          return eb.exists(device);
        });
      }
      if (search.userId !== undefined) {
        const user = await db
          .selectFrom("users")
          .select("id")
          .where("virtual_server_id", "=", search.virtualServerId)
          .where("user_id", "=", search.userId)
          .executeTakeFirst();
        if (!user) return { items: [], nextCursor: null };
        page = page.where("tokens.user_pk", "=", user.id);
      }
      const serials = (await page.orderBy("tokens.serial").limit(search.limit + 1).execute()).map((row) => row.serial);
      if (serials.length === 0) return { items: [], nextCursor: null };
      const query = selectTokenViews(db).where("tokens.serial", "in", serials.slice(0, search.limit));
      const rows = await query.orderBy("tokens.serial").execute();
      return {
        items: rows.map(toToken),
        nextCursor: serials.length > search.limit ? encodeTextCursor(rows.at(-1)!.serial) : null,
      };
    },

    /**
     * Moves unassigned inventory tokens from a service provider to one of its children
     * (allocate) or back (deallocate), within the receiver's capacity.
     */
    async move(
      principal: Principal,
      input: { fromVirtualServerId: string; toVirtualServerId: string; serials?: string[]; type?: TokenType; count?: number },
      direction: "allocate" | "deallocate",
    ) {
      return db.transaction().execute(async (trx) => {
        const from = await findVisibleVirtualServer(trx, principal, input.fromVirtualServerId, "tokens.manage");
        const to = await findVisibleVirtualServer(trx, principal, input.toVirtualServerId);
        const [parent, child] = direction === "allocate" ? [from, to] : [to, from];
        if (child.parent_id !== parent.id) throw fail("NOT_A_CHILD", { child: child.id, parent: parent.id });

        let serials: string[];
        if (input.serials) {
          serials = [...new Set(input.serials)];
          const movable = new Set<string>();
          for (let i = 0; i < serials.length; i += INSERT_CHUNK) {
            const rows = await trx
              .selectFrom("tokens")
              .select("serial")
              .where("serial", "in", serials.slice(i, i + INSERT_CHUNK))
              .where("virtual_server_id", "=", from.id)
              .where("state", "=", "inventory")
              .where("user_pk", "is", null)
              .execute();
            for (const row of rows) movable.add(row.serial);
          }
          const refused = serials.filter((serial) => !movable.has(serial));
          if (refused.length > 0) throw fail("TOKENS_NOT_MOVABLE", { serials: refused.slice(0, 20).join(", ") }, { serials: refused });
        } else {
          const type = input.type!;
          const count = input.count!;
          const rows = await trx
            .selectFrom("tokens")
            .select("serial")
            .where("virtual_server_id", "=", from.id)
            .where("state", "=", "inventory")
            .where("type", "=", type)
            .where("user_pk", "is", null)
            .orderBy("serial")
            .limit(count)
            .execute();
          if (rows.length < count) throw fail("INVENTORY_SHORT", { available: rows.length, type, wanted: count });
          serials = rows.map((row) => row.serial);
        }
        await checkCapacity(trx, to.id, to.capacity, serials.length);
        const now = clock.nowMs();
        for (let i = 0; i < serials.length; i += INSERT_CHUNK) {
          const chunk = serials.slice(i, i + INSERT_CHUNK);
          const moved = await trx
            .updateTable("tokens")
            .set({ virtual_server_id: to.id, updated_at: now })
            .where("serial", "in", chunk)
            .where("virtual_server_id", "=", from.id)
            .where("state", "=", "inventory")
            .where("user_pk", "is", null)
            .executeTakeFirst();
          if (Number(moved.numUpdatedRows) !== chunk.length) throw fail("TOKENS_NOT_MOVABLE", { serials: "(changed meanwhile)" });
        }
        await audit.append(
          trx,
          principal,
          serials.map((serial) => ({
            action: `token.${direction}`,
            virtualServerId: to.id,
            targetType: "token" as const,
            targetId: serial,
            tokenSerial: serial,
            fromState: "inventory",
            toState: "inventory",
            details: { from: from.id, to: to.id },
          })),
        );
        return { count: serials.length, serials, fromVirtualServerId: from.id, toVirtualServerId: to.id };
      });
    },
  };
}

export { isTokenState };
export type TokenInventory = ReturnType<typeof createTokenInventory>;
