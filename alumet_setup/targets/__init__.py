"""How doctor reads a host: the Host protocol and this machine (hosts), a remote host read in rounds
(batched_host), over one ssh session (ssh) or a testinfra backend (connection). Imports only hostside/ and the
package's common modules (tests/unit/test_import_graph.py)."""
