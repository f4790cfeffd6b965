// The annotations and finalizer names external-provisioner writes, which our sidecars write
// and read too (so a cluster can switch between the two): shared here because the resizer
// and the provisioner both read them, and neither should import the other.
export const ANN_STORAGE_PROVISIONER = 'volume.kubernetes.io/storage-provisioner';
export const ANN_BETA_STORAGE_PROVISIONER = 'volume.beta.kubernetes.io/storage-provisioner';
export const ANN_SELECTED_NODE = 'volume.kubernetes.io/selected-node';
export const ANN_PROVISIONED_BY = 'pv.kubernetes.io/provisioned-by';
export const PV_FINALIZER = 'external-provisioner.volume.kubernetes.io/finalizer';
/** A PV's controller-modify Secret, when its StorageClass names one (a PV has no field for it). */
export const ANN_MODIFY_SECRET_NAME = 'volume.kubernetes.io/controller-modify-secret-name';
export const ANN_MODIFY_SECRET_NAMESPACE = 'volume.kubernetes.io/controller-modify-secret-namespace';
