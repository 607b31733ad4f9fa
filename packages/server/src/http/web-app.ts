import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { FastifyPluginAsync, FastifyReply } from "fastify";

/**
 * The tessera app's web face, `/app/`: the vite build of packages/authenticator/web.
 * From src/http and from dist/http alike, the build is three directories up.
 */
export const webAppDistDir = fileURLToPath(new URL("../../../authenticator/web/dist/", import.meta.url));

export interface WebAppOptions {
  /** Where the built web app is. @default packages/authenticator/web/dist */
  distDir?: string;
}

// The app loads nothing from elsewhere and talks only to this server (`/device/v1`).
// Inline styles: the app's CSS lives in index.html and the countdown sets style values.
const contentSecurityPolicy = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/** Files that name the current build: always revalidated, so an update reaches users. */
const revalidated = new Set(["index.html", "sw.js", "manifest.webmanifest"]);

function securityHeaders(reply: FastifyReply): FastifyReply {
  return reply
    .header("content-security-policy", contentSecurityPolicy)
    .header("x-content-type-options", "nosniff")
    // The enrollment link carries its code in the fragment, which is never sent; no referrer all the same.
    .header("referrer-policy", "no-referrer");
}

export const webAppRoutes: FastifyPluginAsync<WebAppOptions> = async (app, options) => {
  const root = path.resolve(options.distDir ?? webAppDistDir);

  app.get("/app", { schema: { hide: true } }, async (_request, reply) => reply.redirect("/app/", 301));

  if (!existsSync(path.join(root, "index.html"))) {
    // A server started from a checkout without `npm run build`: say so, rather than fail to start.
    app.log.warn({ root }, "the tessera web app is not built; /app/ answers 503");
    const notBuilt = async (_request: unknown, reply: FastifyReply) =>
      securityHeaders(reply)
        .status(503)
        .header("cache-control", "no-store")
        .type("text/plain; charset=utf-8")
        .send(`The Tessera web app is not built on this server (no ${root}).\nBuild it with \`npm run build\` and restart the server.\n`);
    app.get("/app/", { schema: { hide: true } }, notBuilt);
    app.get("/app/*", { schema: { hide: true } }, notBuilt);
    return;
  }

  await app.register(fastifyStatic, {
    root,
    prefix: "/app/",
    index: ["index.html"],
    cacheControl: false,
    dotfiles: "ignore",
    setHeaders(reply, filePath) {
      const relative = path.relative(root, filePath).split(path.sep).join("/");
      securityHeaders(reply);
      if (relative === "sw.js") reply.header("service-worker-allowed", "/app/");
      // Vite names bundled files by content hash: they never change under one name.
      reply.header("cache-control", revalidated.has(relative) ? "no-cache" : relative.startsWith("assets/") ? "public, max-age=31536000, immutable" : "public, max-age=3600");
    },
  });
};
