// Child process entry for main.test.ts: runs `skein controller` exactly as the CLI would.
// tap also runs every file of this folder as a test: without the marker it is a no-op.
import { runController } from '../../../src/controller/main.js';

if (process.env.SKEIN_CONTROLLER_CHILD === '1') process.exitCode = await runController(process.argv.slice(2));
else process.stdout.write('1..0 # SKIP child process entry of main.test.ts\n');
