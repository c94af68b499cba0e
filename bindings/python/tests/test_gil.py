"""The GIL is released while netpol evaluates: another Python thread keeps running during a
long matrix() (house style: thin bindings release the GIL, as re2's do)."""

import threading
import time

import netpol


def big_cluster(pods, engine):
    objects = []
    for i in range(pods):
        objects.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": f"ns{i % 10}",
                         "labels": {"app": f"a{i % 20}"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"podIP": f"10.0.{i // 250}.{i % 250 + 1}"},
        })
    for j in range(20):
        objects.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"np{j}", "namespace": f"ns{j % 10}"},
            "spec": {"podSelector": {"matchLabels": {"app": f"a{j}"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {
                         "app": f"a{(j + 1) % 20}"}}}], "ports": [{"port": 80}]}]},
        })
    return netpol.Cluster.from_objects(objects, engine=engine)


def ticks_during(call):
    """How often a Python thread woke up (1 ms sleeps) while `call` ran in another thread."""
    window = {}

    def worker():
        window["start"] = time.perf_counter()
        call()
        window["end"] = time.perf_counter()

    ticks = []
    thread = threading.Thread(target=worker)
    thread.start()
    while thread.is_alive():
        time.sleep(0.001)
        ticks.append(time.perf_counter())
    thread.join()
    inside = [t for t in ticks if window["start"] < t < window["end"]]
    return len(inside), window["end"] - window["start"]


def test_matrix_releases_the_gil():
    # The reference evaluator on 600 pods: 360,000 flows, some tenths of a second.
    cluster = big_cluster(600, "reference")
    ticks, seconds = ticks_during(lambda: cluster.matrix(port=80))
    assert seconds > 0.05, "the call was too short to tell"
    # Holding the GIL, the sleeping thread could not wake up at all during the call.
    assert ticks >= 10, f"only {ticks} wake-ups in {seconds:.3f}s: the GIL was held"


def test_threads_share_a_cluster_and_agree():
    cluster = big_cluster(100, "engine")
    expected = cluster.matrix(port=80)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cluster.matrix(port=80)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r == expected for r in results)
