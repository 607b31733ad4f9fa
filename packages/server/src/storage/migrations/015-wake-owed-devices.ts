import type { Kysely } from "kysely";

// A push login owes its wake message (014) to the devices whose push services have not
// taken it: when some took it and others failed, the ones still owed are listed, so
// that the message is sent again to those only and a phone that has it already does
// not ring again every few seconds. Null: every device of the login with a
// subscription is owed (none took it yet).
export function wakeOwedDevicesMigration() {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable("challenges").addColumn("wake_owed_devices", "text").execute();
    },
  };
}
