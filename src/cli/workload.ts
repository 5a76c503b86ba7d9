/** `skein workload echo|client`: the lab's built-in programs, run inside pods. */
import { runClient } from '../lab/workloads/client.js';
import { runEcho } from '../lab/workloads/echo.js';

const USAGE = `usage:
  skein workload echo [--http 8080] [--grpc 9090] [--tcp 7070] [--host 0.0.0.0]   (0 disables a port)
  skein workload client --target HOST:PORT [--protocol http1|h2c|grpc|tcp|ws] [--count 10]
        [--concurrency 1] [--rate R] [--duration 60] [--size BYTES] [--new-connection]
        [--grpc-call unary|server-stream|client-stream|bidi] [--path /] [--timeout 5] [--connections 1]
  skein workload client --idle       (stay up; for pods that tests exec into)`;

export async function workloadCommand(argv: string[]): Promise<number> {
  const [which, ...rest] = argv;
  if (which === 'echo') return runEcho(rest);
  if (which === 'client') {
    const code = await runClient(rest);
    // grpc-js keeps closed channels' timers (reconnect backoff, idle) alive for up to ~30 s
    // after close(); the summary is printed, so the client is done.
    process.exit(code);
  }
  process.stdout.write(`${USAGE}\n`);
  return which === '--help' || which === 'help' ? 0 : 2;
}
