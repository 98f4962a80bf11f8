#!/usr/bin/env node
import { agentProgram } from '../src/cli/agent-program.js';
import { runCommand } from '../src/cli/run-command.js';

await runCommand(agentProgram());
