#!/usr/bin/env node
// The driver process: flags into settings (config.ts), the driver from them (create.ts),
// and a graceful stop on SIGTERM/SIGINT.
import { createLogger, runMain, stopOnSignals } from '../lib/process.js';
import { armedFailpoints } from './failpoints.js';
import { optionsFromArgv, resolveSettings, USAGE } from './config.js';
import { createDriver } from './create.js';

async function main(): Promise<void> {
  const opts = optionsFromArgv(process.argv.slice(2));
  if (opts === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  const settings = resolveSettings(opts);
  const log = createLogger('tscsi-driver', settings.logLevel);
  if (armedFailpoints().length) log.warn({ failpoints: armedFailpoints() }, 'fail points armed (TSCSI_FAILPOINTS): the driver kills itself at these steps');
  const driver = await createDriver(settings, { log });
  await driver.listen();
  const s = settings;
  log.info({ driver: s.driverName, version: s.version, nodeId: s.nodeId, mode: s.mode, backends: [...driver.backends.keys()], pathRoots: s.allowedPathRoots }, 'driver started');
  stopOnSignals(log, async () => {
    log.info('shutting down: letting in-flight calls finish');
    await driver.stop();
  });
}

runMain('tscsi-driver', main);
