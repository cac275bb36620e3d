"""Values that set every documented option of the chart at least once, grouped as a user would.

Each entry: values for `helm template`, and the oldest Kubernetes version it needs (the chart's
kubeVersion floor unless the option needs newer). tests/deploy/test_chart.py renders each, validates every
object, and checks that together they set every leaf of values.yaml.
"""

from __future__ import annotations

from typing import Any

MIN_KUBE = "1.28.0"

ALERTS = (
    "KeywardIssuerNotReady",
    "KeywardCertificateRequestsFailing",
    "KeywardTokenUnavailable",
    "KeywardApiWriteErrors",
    "KeywardRequestsParked",
    "KeywardEstServerErrors",
    "KeywardOperatorDown",
)

OPTION_SETS: dict[str, tuple[dict[str, Any], str]] = {
    "defaults": ({}, MIN_KUBE),
    # Shared token: SoftHSM2 on a ReadWriteMany volume, three replicas, at most one down.
    "shared-token-rwx": (
        {
            "replicas": 3,
            "token": {
                "persistentVolumeClaim": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "nfs-client",
                    "size": "1Gi",
                    "keepOnUninstall": False,
                }
            },
            "podDisruptionBudget": {"maxUnavailable": "", "minAvailable": 2},
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "keyward"}},
                }
            ],
        },
        MIN_KUBE,
    ),
    # Shared token: a network HSM whose PKCS#11 module is installed on the nodes; no token volume.
    "network-hsm-hostpath": (
        {
            "replicas": 2,
            "token": {"storage": "none"},
            "pkcs11Module": {
                "source": "hostPath",
                "mountPath": "/opt/vendor",
                "hostPath": {"path": "/usr/lib/vendor-hsm", "type": "Directory"},
            },
            "hsm": {"config": {"module": "/opt/vendor/libvendorpkcs11.so", "tokenLabel": "keyward-ca"}},
        },
        MIN_KUBE,
    ),
    # The PKCS#11 module from an OCI image volume (Kubernetes 1.31+ with the ImageVolume feature).
    "module-image-volume": (
        {
            "token": {"storage": "none"},
            "pkcs11Module": {
                "source": "image",
                "image": {"reference": "registry.example/hsm/pkcs11-module:1.0", "pullPolicy": "Always"},
            },
            "hsm": {"config": {"module": "/opt/pkcs11/libvendorpkcs11.so"}},
        },
        "1.31.0",
    ),
    # Token per pod: SGX enclaves, keys brought in by key provisioning.
    "sgx-per-pod": (
        {
            "replicas": 2,
            "sgx": {
                "enabled": True,
                "epc": "1Mi",
                "enclave": 1,
                "provision": 1,
                "quoteProvider": "aesmd",
                "aesmdSocketHostPath": "/var/run/aesmd",
            },
            "token": {"storage": "emptyDir", "emptyDir": {"medium": "Memory", "sizeLimit": "32Mi"}},
            "nodeSelector": {"intel.feature.node.kubernetes.io/sgx": "true"},
        },
        MIN_KUBE,
    ),
    # Everything brought by the user: claim, HSM Secret, ServiceAccount, RBAC, cert-manager approval.
    "bring-your-own": (
        {
            "token": {
                "persistentVolumeClaim": {"existingClaim": "ca-tokens"},
                "mountPath": "/var/lib/tokens",
            },
            "hsm": {"existingSecret": "my-hsm", "secretKey": "hsm.json", "mountPath": "/etc/keyward-hsm"},
            "serviceAccount": {"create": False, "name": "ca-operator"},
            "rbac": {"create": False},
            "leaderElection": {"enabled": False},
            "certManager": {"approver": {"enabled": False}},
            "podDisruptionBudget": {"enabled": False},
            "metrics": {"service": {"enabled": False}},
            "est": {"service": {"enabled": False}},
        },
        MIN_KUBE,
    ),
    # PINs given, cert-manager elsewhere, the namespace made by the chart.
    "given-pins": (
        {
            "namespace": {"create": True, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
            "hsm": {"config": {"userPin": "user-pin-from-values", "soPin": "so-pin-from-values"}},
            "certManager": {"approver": {"namespace": "security", "serviceAccount": "cm-controller"}},
            "serviceAccount": {"name": "keyward-operator", "annotations": {"example.com/role": "ca"}},
        },
        MIN_KUBE,
    ),
    # Prometheus Operator: ServiceMonitor and PrometheusRule, alerts retuned.
    "monitoring": (
        {
            "metrics": {
                "port": 9100,
                "service": {"port": 9100, "annotations": {"example.com/scrape": "true"}},
                "serviceMonitor": {
                    "enabled": True,
                    "labels": {"release": "prometheus"},
                    "interval": "15s",
                    "scrapeTimeout": "5s",
                },
                "prometheusRule": {
                    "enabled": True,
                    "labels": {"release": "prometheus"},
                    "alerts": {
                        name: {"enabled": name != "KeywardRequestsParked", "for": "3m", "severity": "page"}
                        for name in ALERTS
                    },
                },
            }
        },
        MIN_KUBE,
    ),
    # The EST server for devices outside the cluster, its certificate issued by a TCS issuer.
    "est-loadbalancer": (
        {
            "est": {
                "port": 9443,
                "issuer": "TCSClusterIssuer/est-ca",
                "hostnames": ["est.example.com", "192.0.2.10"],
                "defaultNamespaces": ["plant-a", "plant-b"],
                "service": {
                    "type": "LoadBalancer",
                    "port": 8443,
                    "annotations": {"example.com/lb": "internal"},
                    "loadBalancerSourceRanges": ["192.0.2.0/24"],
                    "externalTrafficPolicy": "Local",
                },
            }
        },
        MIN_KUBE,
    ),
    # ... or with a certificate from a Secret, on a NodePort.
    "est-nodeport": (
        {"est": {"tlsSecret": "keyward-system/est-tls", "service": {"type": "NodePort", "nodePort": 30443}}},
        MIN_KUBE,
    ),
    # The operator's own options and the pod's placement.
    "operator-options": (
        {
            "nameOverride": "ca",
            "fullnameOverride": "corp-ca",
            "image": {
                "repository": "registry.example/keyward",
                "tag": "0.1.0-rc1",
                "digest": "sha256:" + "ab" * 32,
                "pullPolicy": "Always",
            },
            "imagePullSecrets": [{"name": "registry-credentials"}],
            "operator": {
                "watchNamespaces": ["team-a", "team-b"],
                "csrFullCertChain": True,
                "signingProcesses": 0,
                "waitForToken": False,
                "verbose": True,
                "bindAddress": "::",
                "extraArgs": ["--standalone"],
                "extraEnv": [{"name": "KEYWARD_EST_TIMEOUT", "value": "20"}],
            },
            "health": {
                "port": 9083,
                "livenessProbe": {"initialDelaySeconds": 5, "periodSeconds": 30, "timeoutSeconds": 3,
                                  "failureThreshold": 5},
                "readinessProbe": {"initialDelaySeconds": 1, "periodSeconds": 5, "timeoutSeconds": 2,
                                   "failureThreshold": 2},
                "startupProbe": {"periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 120},
            },
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 20001, "runAsGroup": 20001,
                                   "fsGroup": 20001, "seccompProfile": {"type": "RuntimeDefault"}},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
            "tmp": {"sizeLimit": "128Mi"},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "terminationGracePeriodSeconds": 60,
            "priorityClassName": "system-cluster-critical",
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "security", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In",
                                                   "values": ["amd64"]}]}
                        ]
                    }
                }
            },
            "podAnnotations": {"example.com/team": "security"},
            "podLabels": {"example.com/tier": "ca"},
        },
        MIN_KUBE,
    ),
}  # fmt: skip
