// run(): the contract every host tool call relies on, on real processes (sh, cat, a missing
// binary): output without its final newline, input, the environment, exit codes that are
// answers, the stderr in the error, and a timeout that kills even a child ignoring SIGTERM.
import { describe, it, expect } from 'vitest';
import { run, CommandError } from '../../driver/host/exec.js';
import { ToolMissingError } from '../../driver/errors.js';

describe('run', () => {
  it('returns stdout and stderr without the final newline', async () => {
    const r = await run('sh', ['-c', 'printf "a\\nb\\n"; printf "warn\\n" >&2']);
    expect(r).toEqual({ stdout: 'a\nb', stderr: 'warn', exitCode: 0 });
  });

  it('feeds input to the tool, and gives a tool that reads nothing an empty stdin', async () => {
    expect((await run('cat', [], { input: 'hello\n' })).stdout).toBe('hello');
    expect((await run('cat', [])).stdout).toBe('');
  });

  it('runs with the driver environment, LC_ALL=C and the extra variables', async () => {
    process.env.TSCSI_EXEC_TEST = 'inherited';
    try {
      const r = await run('sh', ['-c', 'echo "$LC_ALL $TSCSI_EXEC_TEST $EXTRA"'], { env: { EXTRA: 'given' } });
      expect(r.stdout).toBe('C inherited given');
    } finally {
      delete process.env.TSCSI_EXEC_TEST;
    }
  });

  it('a failing tool is a CommandError naming the command, its exit code and stderr; okCodes are answers', async () => {
    const err = await run('sh', ['-c', 'echo "no such volume" >&2; exit 3']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).exitCode).toBe(3);
    expect((err as CommandError).message).toBe('sh -c echo "no such volume" >&2; exit 3 failed (exit 3): no such volume');
    expect(await run('sh', ['-c', 'exit 2'], { okCodes: [2] })).toEqual({ stdout: '', stderr: '', exitCode: 2 });
  });

  it('a tool that does not exist is a ToolMissingError naming it', async () => {
    const err = await run('/nonexistent/tscsi-tool', ['x']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolMissingError);
    expect((err as ToolMissingError).message).toContain('the host tool /nonexistent/tscsi-tool is not installed');
  });

  it('a tool past its timeout is killed, even one that ignores SIGTERM', async () => {
    const err = await run('sh', ['-c', 'trap "" TERM; echo started; while :; do sleep 0.05; done'], { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).timedOut).toBe(true);
    expect((err as CommandError).message).toBe('sh -c trap "" TERM; echo started; while :; do sleep 0.05; done timed out');
  });
});
