#!/usr/bin/env node
import { agentProgram } from '../src/cli/agent-program.js';
import { tuneHeap } from '../src/cli/heap.js';
import { runCommand } from '../src/cli/run-command.js';

tuneHeap();
await runCommand(agentProgram());
