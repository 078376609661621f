// Runs a wasm32-wasip1 test binary inside Node's V8, the engine family the
// filter runs in inside Envoy. Cargo calls it as the target's runner:
//
//   CARGO_TARGET_WASM32_WASIP1_RUNNER="$PWD/scripts/wasm-test-runner" \
//     cargo test --target wasm32-wasip1 -p warrant-session
//
// Cargo passes the .wasm path and then libtest's arguments. The module gets
// WASI preview 1 from `node:wasi`: clocks, random_get, stdout/stderr,
// arguments, environment, and the repository directory at its own absolute
// path, so tests that read fixtures through `CARGO_MANIFEST_DIR` find them.
// (node:wasi is no sandbox: run only our own tests with it.) Run it through
// scripts/wasm-test-runner, which gives Node the flag that keeps it from
// crashing on tests that grow their memory a lot (see there).
//
// Why not wasm-bindgen-test: it targets wasm32-unknown-unknown with JS glue,
// not the wasm32-wasip1 target the filter ships as, so it would test a
// different build (see envoy/README.md, "How this directory is tested").

import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { argv, env, exit } from "node:process";
import { fileURLToPath } from "node:url";
import { WASI } from "node:wasi";

const [file, ...args] = argv.slice(2);
if (!file) {
  console.error("usage: wasm-test-runner.mjs FILE.wasm [ARGS...]");
  exit(2);
}

const repository = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const wasi = new WASI({
  version: "preview1",
  args: [file, ...args],
  env,
  preopens: { [repository]: repository },
  returnOnExit: true,
});
const imports = wasi.getImportObject();
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, imports);
// A test that fails panics, and panics abort on wasm32-wasip1: V8 reports
// the `unreachable` trap as an exception, which fails the run.
try {
  exit(wasi.start(instance));
} catch (error) {
  console.error(`wasm-test-runner: ${file}: ${error}`);
  exit(101);
}
