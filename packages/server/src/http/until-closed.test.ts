import { createServer, get, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { expect, it } from "vitest";
import { untilClosed } from "./app.js";

/** A request whose client goes away while the server is still busy with it; `check` sees the response afterwards. */
async function clientGoesAway(check: (response: ServerResponse) => void): Promise<void> {
  let done: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const server = createServer((_request, response) => {
    response.once("close", () => {
      check(response);
      response.end();
      done();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = get({ host: "127.0.0.1", port: (server.address() as AddressInfo).port });
  client.on("error", () => undefined);
  setTimeout(() => client.destroy(), 50);
  await finished;
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

it("aborts at once for a response whose client went before the long poll began (its key or signature being checked)", async () => {
  let signal: AbortSignal | undefined;
  await clientGoesAway((response) => (signal = untilClosed(response)));
  expect(signal?.aborted).toBe(true);
});
