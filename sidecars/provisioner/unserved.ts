// A claim of our driver whose StorageClass names a backend the driver does not have (a typo
// in `backend`, a backend of a newer release) is provisioned by nobody: every provisioner
// skips a class it does not serve, so the claim used to stay Pending with no word from
// anyone (#16's "nobody says why"). Each provisioner that sees such a claim says so on it,
// once per claim, since none of them will take it. A backend some other provisioner serves
// (RBD for the central one, loop/LVM for the nodes) is not this case and stays silent.
import type { k8s } from '../common/kube.js';
import type { Recorder } from '../common/events.js';
import { ALL_BACKENDS, backendOfClass, type Scope } from '../common/scope.js';

/** Why no provisioner of `driverName` serves class `sc`, or undefined when one does (or it is not ours). */
export function unservedBackendProblem(scope: Scope, sc: k8s.V1StorageClass): string | undefined {
  if (sc.provisioner !== scope.driverName) return undefined;
  const backend = backendOfClass(scope, sc);
  if ((ALL_BACKENDS as readonly string[]).includes(backend)) return undefined;
  return `StorageClass "${sc.metadata?.name}" names backend "${backend}", which ${scope.driverName} does not have (its backends: ${ALL_BACKENDS.join(', ')}): no provisioner takes this claim; fix the class's "backend" parameter (a class cannot be edited: make a new one) and claim again`;
}

/** The claims (namespace/name, by UID) already told; an entry goes with its claim (forget). */
export class UnservedClaims {
  private readonly told = new Map<string, string>();

  constructor(
    private readonly scope: Scope,
    private readonly recorder: Recorder,
  ) {}

  get size(): number {
    return this.told.size;
  }

  /** Says on the claim why nobody provisions it, the first time this provisioner sees it so. */
  async check(key: string, pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass): Promise<void> {
    const problem = unservedBackendProblem(this.scope, sc);
    const uid = pvc.metadata?.uid ?? '';
    if (!problem || this.told.get(key) === uid) return;
    this.told.set(key, uid);
    await this.recorder.event(pvc, 'Warning', 'ProvisioningFailed', problem);
  }

  forget(key: string): void {
    this.told.delete(key);
  }
}
