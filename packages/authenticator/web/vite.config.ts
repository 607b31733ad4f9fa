import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build, defineConfig, type Plugin } from "vite";

// The tessera app's web face, served by the server at /app/ (packages/server/src/http/web-app.ts).
const root = fileURLToPath(new URL(".", import.meta.url));
const base = "/app/";

function filesUnder(dir: string, prefix = ""): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? filesUnder(full, `${prefix}${name}/`) : [`${prefix}${name}`];
  });
}

const alias = {
  // The otp package's source, not its Node build: it is pure (WebCrypto and `otpauth`).
  "@tessera/otp": fileURLToPath(new URL("../../otp/src/index.ts", import.meta.url)),
};

/**
 * Builds the service worker once the app is built, as one classic script (a worker
 * registered without `type: "module"` cannot import the app's chunks), with the list
 * of every built file written in, so the worker caches the whole app shell when it
 * installs and the app (passcodes included) works offline. Every build with other files
 * gives another sw.js, which is how browsers learn of an update.
 */
function serviceWorker(): Plugin {
  let mode = "production";
  return {
    name: "tessera-service-worker",
    apply: "build",
    configResolved(config) {
      mode = config.mode;
    },
    async closeBundle() {
      const dist = path.join(root, "dist");
      const files = filesUnder(dist).filter((file) => file !== "sw.js" && !file.endsWith(".map"));
      const urls = [base, ...files.filter((file) => file !== "index.html").map((file) => `${base}${file}`)].sort();
      await build({
        configFile: false,
        root,
        mode,
        // The app's build has copied public/ already.
        publicDir: false,
        logLevel: "warn",
        resolve: { alias },
        build: {
          outDir: dist,
          emptyOutDir: false,
          target: "es2022",
          lib: { entry: path.join(root, "src/sw.ts"), formats: ["iife"], name: "tesseraServiceWorker", fileName: () => "sw.js" },
        },
      });
      const worker = path.join(dist, "sw.js");
      const source = readFileSync(worker, "utf8");
      const placeholder = /(["'`])__PRECACHE_MANIFEST__\1/;
      if (!placeholder.test(source)) throw new Error("sw.js has no __PRECACHE_MANIFEST__ to fill in");
      writeFileSync(worker, source.replace(placeholder, () => JSON.stringify(JSON.stringify(urls))));
    },
  };
}

export default defineConfig({
  root,
  base,
  publicDir: "public",
  resolve: { alias },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
  },
  plugins: [serviceWorker()],
});
