import type { CompiledQuery, Insertable, Kysely } from "kysely";
import type { Database } from "./schema.js";

/** Stands for a parameter while a query is compiled; replaced by the value at each run. */
class Placeholder {
  constructor(readonly name: string) {}
}

/**
 * A query built and compiled once, then run with new values. Kysely builds and compiles
 * every query anew, which costs tens of microseconds for a wide insert: on the login
 * path, which runs thousands of times a second, that was more than the database's own
 * work. The SQL text depends only on the dialect, so one compilation serves the database
 * and every transaction on it (run the result with `trx.executeQuery(...)`).
 *
 * `build` receives `param(name)`, which stands for a value given at each run; values
 * written directly into the builder are constants of the compiled query.
 */
export function prepareQuery<Params extends Record<string, unknown>, Row>(
  db: Kysely<Database>,
  build: (db: Kysely<Database>, param: <Name extends keyof Params & string>(name: Name) => Params[Name]) => { compile(): CompiledQuery<Row> },
): (params: Params) => CompiledQuery<Row> {
  const compiled = build(db, (name) => new Placeholder(name) as never).compile();
  const slots = compiled.parameters.map((value) => (value instanceof Placeholder ? value.name : undefined));
  return (params) => ({
    ...compiled,
    parameters: compiled.parameters.map((constant, index) => {
      const name = slots[index];
      if (name === undefined) return constant;
      if (!(name in params)) throw new Error(`prepared query: no value for ${name}`);
      return params[name];
    }),
  });
}

/** An insert of one row into `table`, every column given a parameter of its own name, compiled once. */
export function prepareInsert<Table extends keyof Database & string, Row extends Insertable<Database[Table]>>(db: Kysely<Database>, table: Table, columns: readonly (keyof Row & string)[]): (row: Row) => CompiledQuery<never> {
  return prepareQuery<Row & Record<string, unknown>, never>(db, (db, param) =>
    db.insertInto(table).values(Object.fromEntries(columns.map((column) => [column, param(column)])) as unknown as Insertable<Database[Table]>),
  ) as (row: Row) => CompiledQuery<never>;
}
