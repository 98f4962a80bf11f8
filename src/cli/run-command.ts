import { CommanderError, type Command } from 'commander';
import { NbackupError, errorMessage } from '../errors.js';
import { EXIT_USAGE, exitCodeFor, exitCodeHelp } from '../exit-codes.js';
import { printableText } from '../printable.js';

/**
 * Runs a commander program the way both commands do: the exit-status table in `--help`, a usage
 * mistake exits 2, and any error that ends the command is one line on stderr
 * (`nbackup-agent: message`) with the exit status of its kind.
 */
export async function runCommand(program: Command): Promise<void> {
  const name = program.name();
  program.exitOverride().addHelpText('after', `\n${exitCodeHelp()}\n`);
  try {
    await program.parseAsync();
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has printed its own message (or the help text, or the version).
      process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    process.stderr.write(`${name}: ${printableText(errorMessage(err))}\n`);
    process.exit(exitCodeFor(err));
  }
}

/** A mistake in how the command was called. */
export function usageError(message: string): NbackupError {
  return new NbackupError('usage', message);
}
