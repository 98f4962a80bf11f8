#!/usr/bin/env node
import { tuneHeap } from '../src/cli/heap.js';
import { runCommand } from '../src/cli/run-command.js';
import { serverProgram } from '../src/cli/server-program.js';

tuneHeap();
await runCommand(serverProgram());
