export { ExitCode, HELP, USAGE, UsageError, VERSION } from './args.js';
export type { CliIo, CliStream } from './io.js';
export { main } from './main.js';
export type { OptionsReport } from './options.js';
export type { FileResult } from './scan.js';
export { exitCodeOf, formatResult } from './scan.js';
