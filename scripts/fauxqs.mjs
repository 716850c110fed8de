// Start the fauxqs SQS emulator for tests and benchmarks: request logging
// off, bound to 127.0.0.1 only, on PORT (0: a free one). Prints
// `fauxqs listening on PORT` once it accepts requests.
// Usage: node scripts/fauxqs.mjs [PORT]
// fauxqs comes from FAUXQS_HOME (default ~/.cache/forloop/fauxqs), where
// scripts/test installs it: npm install --prefix "$FAUXQS_HOME" fauxqs@1.9.2
import { homedir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const home = process.env.FAUXQS_HOME || join(homedir(), ".cache", "forloop", "fauxqs");
const entry = join(home, "node_modules", "fauxqs", "dist", "app.js");
let fauxqs;
try {
  fauxqs = await import(pathToFileURL(entry).href);
} catch (error) {
  console.error(`cannot load fauxqs from ${entry}: ${error.message}`);
  console.error(`install it with: npm install --prefix "${home}" fauxqs@1.9.2 (scripts/test does)`);
  process.exit(2);
}
const app = fauxqs.buildApp({ logger: false });
const address = await app.listen({ port: Number(process.argv[2] ?? 0), host: "127.0.0.1" });
console.log(`fauxqs listening on ${new URL(address).port}`);
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => app.close().then(() => process.exit(0)));
}
