#!/usr/bin/env node
// First: a SIGHUP from here on is noted, not fatal (the daemon reloads; see the module).
import '../src/cli/early-hangup.js';
import { agentProgram } from '../src/cli/agent-program.js';
import { tuneHeap } from '../src/cli/heap.js';
import { runCommand } from '../src/cli/run-command.js';

tuneHeap();
await runCommand(agentProgram());
