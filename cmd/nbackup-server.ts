#!/usr/bin/env node
import { runCommand } from '../src/cli/run-command.js';
import { serverProgram } from '../src/cli/server-program.js';

await runCommand(serverProgram());
