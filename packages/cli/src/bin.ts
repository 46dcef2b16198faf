#!/usr/bin/env node
import { main } from './main.js';

// `icapkit scan ... | head -1`: a closed pipe ends the command quietly.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

const code = await main(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
});
process.exitCode = code;
// Everything is closed by now; should anything still hold the event loop, do not hang on it.
setTimeout(() => process.exit(code), 2_000).unref();
