import { ExitCode, HELP, USAGE, UsageError, VERSION } from './args.js';
import type { CliIo } from './io.js';
import { runOptions } from './options.js';
import { runScan } from './scan.js';
import { renderText } from './text.js';

/**
 * The icapkit command, in-process: `argv` without the node and script paths
 * (`process.argv.slice(2)`). Resolves with the exit code; never rejects.
 */
export async function main(argv: string[], io: CliIo): Promise<number> {
  const help = () => {
    io.stdout.write(HELP);
    return ExitCode.OK;
  };
  try {
    const [command, ...rest] = argv;
    switch (command) {
      case undefined:
        throw new UsageError('no command given');
      case '-h':
      case '--help':
      case 'help':
        return help();
      case '-V':
      case '--version':
      case 'version':
        io.stdout.write(`${VERSION}\n`);
        return ExitCode.OK;
      case 'scan':
        return await runScan(rest, io, help);
      case 'options':
        return await runOptions(rest, io, help);
      default:
        throw new UsageError(
          command.startsWith('-')
            ? `${command} must follow a command (scan or options)`
            : `unknown command ${JSON.stringify(command)}`,
        );
    }
  } catch (err) {
    if (err instanceof UsageError || isParseArgsError(err)) {
      io.stderr.write(
        `icapkit: ${renderText((err as Error).message)}\n${USAGE}\nRun "icapkit --help" for the options.\n`,
      );
      return ExitCode.USAGE;
    }
    io.stderr.write(
      `icapkit: unexpected failure: ${renderText(err instanceof Error ? (err.stack ?? err.message) : String(err))}\n`,
    );
    return ExitCode.ERROR;
  }
}

/** node:util parseArgs rejects unknown options, missing values... with these codes. */
function isParseArgsError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_');
}
