// The host tools as a recorder, for unit tests of code whose commands cannot be provoked
// for real (a discard that keeps old data, a thaw that fails). A test file mocks exec.js with
//   vi.mock('../../driver/host/exec.js', async (orig) => (await import('./exec-recorder.js')).recordingExec(orig));
// (vi.mock is hoisted above imports, so the factory imports this module itself), then reads
// `recorder.calls` and sets `recorder.answer` to make a command fail or print something.
import type * as Exec from '../../driver/host/exec.js';

type ExecModule = typeof Exec;

/** What a recorded command answers; undefined means "exit 0, no output". May throw, as run() does. */
export type Answer = (file: string, args: string[], real: ExecModule) => Exec.RunResult | undefined;

export const recorder: { calls: string[]; answer?: Answer } = { calls: [] };

export function resetRecorder(answer?: Answer): void {
  recorder.calls.length = 0;
  recorder.answer = answer;
}

/** exec.js with run() replaced by the recorder; everything else is the real module. */
export async function recordingExec(orig: () => Promise<ExecModule>): Promise<ExecModule> {
  const real = await orig();
  return {
    ...real,
    run: async (file: string, args: string[]) => {
      recorder.calls.push([file, ...args].join(' '));
      return recorder.answer?.(file, args, real) ?? { stdout: '', stderr: '', exitCode: 0 };
    },
  };
}
