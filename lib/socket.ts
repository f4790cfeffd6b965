// The Unix sockets the project serves (the driver's CSI socket, the registrar's kubelet
// registration socket) are set up and torn down one way: a stale socket from a killed run is
// replaced, anything else at the path is refused (never delete a file we did not make), and
// the socket is mode 0600 from the moment it exists (the umask covers the window between
// bind and chmod, in which another local user could otherwise connect).
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs/promises';
import type { Logger } from 'pino';

/** Owner read/write only: only root (the CO, kubelet, our sidecars) may connect. */
export const SOCKET_MODE = 0o600;

/** The path of a "unix:///path" endpoint or a bare path; refuses relative paths. */
export function unixSocketPath(endpoint: string): string {
  const p = endpoint.startsWith('unix://') ? endpoint.slice('unix://'.length) : endpoint;
  if (!p.startsWith('/')) throw new Error(`a socket endpoint must be unix:///absolute/path or /absolute/path, not ${JSON.stringify(endpoint)}`);
  return p;
}

/** Removes the socket at p if there is one; refuses to touch anything that is not a socket. Resolves whether it removed one. */
export async function removeSocket(p: string): Promise<boolean> {
  const st = await fs.lstat(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (!st) return false;
  if (!st.isSocket()) throw new Error(`${p} exists and is not a socket; refusing to replace it`);
  await fs.unlink(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  return true;
}

/**
 * Serves a gRPC server on the Unix socket at p: a stale socket is removed first, the socket
 * is created under a umask that leaves it mode 0600, and chmod makes sure of it.
 */
export async function listenUnix(server: grpc.Server, p: string, log?: Logger): Promise<void> {
  if (await removeSocket(p)) log?.info({ socket: p }, 'removed a stale socket');
  // umask is process-wide; it is lowered only for the bind, which runs at start-up before any work.
  const oldMask = process.umask(0o777 & ~SOCKET_MODE);
  try {
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${p}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  } finally {
    process.umask(oldMask);
  }
  await fs.chmod(p, SOCKET_MODE);
}

/**
 * Stops a server listenUnix started: no new calls, the ones in flight may finish for up to
 * graceMs (then they are cut off), then the socket goes (if it is still a socket). Resolves
 * true when every call finished in time.
 */
export async function closeUnix(server: grpc.Server, p: string, graceMs: number, log?: Logger): Promise<boolean> {
  const graceful = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      log?.warn({ socket: p, graceMs }, 'calls in flight did not finish in time; cutting them off');
      server.forceShutdown();
      resolve(false);
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  await removeSocket(p);
  return graceful;
}
