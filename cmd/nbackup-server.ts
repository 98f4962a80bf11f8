#!/usr/bin/env node
// First: a SIGHUP from here on is noted, not fatal (the server reopens its log; see the module).
import '../src/cli/early-hangup.js';
import { tuneHeap } from '../src/cli/heap.js';
import { runCommand } from '../src/cli/run-command.js';
import { serverProgram } from '../src/cli/server-program.js';

tuneHeap();
await runCommand(serverProgram());
