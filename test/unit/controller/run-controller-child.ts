// Child process entry for main.test.ts: runs `skein controller` exactly as the CLI would.
import { runController } from '../../../src/controller/main.js';

process.exitCode = await runController(process.argv.slice(2));
