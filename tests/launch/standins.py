"""Stand-ins for `gcloud`, `srun`, `scontrol` and `hostname`, so the launch scripts run here.

`install(bin_dir, state_dir, scenario)` writes one executable per command into `bin_dir`
(put it first on PATH); each records its arguments in STATE/calls.jsonl and plays back
what `scenario` says, as the real tools answer:

  gcloud compute tpus [alpha] queued-resources create|delete   "create_fails": an error
  gcloud compute tpus queued-resources describe NAME --format=value(state.state)
      the next of "states" (the last one repeats); without --format, a description
  gcloud compute tpus tpu-vm scp SRC NAME:DEST --worker=all
      copies SRC to DEST under every worker's home
  gcloud compute tpus tpu-vm ssh NAME --worker=all --command=CMD
      with "execute": runs CMD with bash for every worker at once, each in its own home
      (STATE/worker_K) with hostname NAME-w-K and, with "pod", the variables of a
      `local_pod` process (coordinator, count, id, CPU devices) as a TPU VM's runtime
      would supply them; "failing_worker": ssh to that worker fails (exit 255)
  scontrol show hostnames LIST     "nodes" (default: localhost twice)
  srun ... CMD ARGS                runs CMD once per task with SLURM_PROCID set, output to
                                   --output (%t: the task), as a local pod's processes
                                   (unless "execute" is false); STATE/srun_env.json: the
                                   variables the script exported for its tasks
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

COMMANDS = ("gcloud", "srun", "scontrol", "hostname")


def install(bin_dir: Path, state_dir: Path, scenario: dict) -> None:
  bin_dir.mkdir(parents=True, exist_ok=True)
  state_dir.mkdir(parents=True, exist_ok=True)
  (state_dir / "scenario.json").write_text(json.dumps(scenario))
  for name in COMMANDS:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\nSTANDIN_STATE={str(state_dir)!r} exec {sys.executable!r} "
                    f"{str(Path(__file__).resolve())!r} {name} \"$@\"\n")
    path.chmod(0o755)


def calls(state_dir: Path) -> list[list[str]]:
  """Every recorded call: [command, arguments...]."""
  path = state_dir / "calls.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _flag(args: list[str], name: str) -> str | None:
  for a in args:
    if a.startswith(f"--{name}="):
      return a.split("=", 1)[1]
  return None


def _worker_env(state: Path, scenario: dict, worker: int, name: str, port: int) -> dict:
  env = dict(os.environ)
  home = state / f"worker_{worker}"
  home.mkdir(exist_ok=True)
  env.update(HOME=str(home), STANDIN_HOSTNAME=f"{name}-w-{worker}")
  if scenario.get("pod"):
    from align_jax.parallel.local_pod import process_env
    env = process_env(worker, scenario["workers"], scenario.get("devices", 4), port, 30, env)
  return env


def _ssh(state: Path, scenario: dict, args: list[str]) -> int:
  name, command = args[0], _flag(args, "command")
  if _flag(args, "worker") != "all":
    print("stand-in: only --worker=all is played back", file=sys.stderr)
    return 2
  if scenario.get("failing_worker") is not None:
    print(f"ssh: connect to host {name}-w-{scenario['failing_worker']} port 22: Connection "
          "refused", file=sys.stderr, flush=True)
    return 255
  if not scenario.get("execute"):
    return 0
  from align_jax.parallel.local_pod import free_port
  port, results = free_port(), {}

  def one(worker: int) -> None:
    done = subprocess.run(["bash", "-c", command],
                          env=_worker_env(state, scenario, worker, name, port),
                          cwd=state / f"worker_{worker}")
    results[worker] = done.returncode
  for k in range(scenario["workers"]):
    (state / f"worker_{k}").mkdir(exist_ok=True)
  threads = [threading.Thread(target=one, args=(k,)) for k in range(scenario["workers"])]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return max(results.values())


def _scp(state: Path, scenario: dict, args: list[str]) -> int:
  source, target = args[0], args[1]
  destination = target.split(":", 1)[1]
  for k in range(scenario["workers"]):
    home = state / f"worker_{k}"
    home.mkdir(exist_ok=True)
    shutil.copy(source, home / destination)
  return 0


def _queued_resources(state: Path, scenario: dict, args: list[str]) -> int:
  verb, name = args[0], args[1]
  if verb == "create":
    if scenario.get("create_fails"):
      print("ERROR: (gcloud.compute.tpus.queued-resources.create) RESOURCE_EXHAUSTED: "
            f"quota exceeded for {_flag(args, 'accelerator-type')}", file=sys.stderr)
      return 1
    print(f"Create request issued for: [{name}]")
    return 0
  if verb == "describe":
    states = scenario.get("states", ["ACTIVE"])
    counter = state / "describe_count"
    seen = int(counter.read_text()) if counter.exists() else 0
    current = states[min(seen, len(states) - 1)]
    if _flag(args, "format") == "value(state.state)":
      counter.write_text(str(seen + 1))
      print(current)
    else:
      print(f"name: projects/{_flag(args, 'project')}/locations/{_flag(args, 'zone')}/"
            f"queuedResources/{name}\nstate:\n  state: {current}")
    return 0
  if verb == "delete":
    print(f"Deleted queued resource [{name}].")
    return 0
  return 2


def _srun(state: Path, scenario: dict, args: list[str]) -> int:
  # What the tasks would inherit from the script (its coordinator and process count).
  with open(state / "srun_env.json", "w") as f:
    json.dump({k: os.environ.get(k) for k in ("ALIGN_JAX_COORDINATOR",
                                             "ALIGN_JAX_NUM_PROCESSES", "PYTHONUNBUFFERED")}, f)
  if not scenario.get("execute", True):
    return 0
  tasks = int(_flag(args, "ntasks") or 1)
  output = _flag(args, "output")
  command = next(i for i, a in enumerate(args) if not a.startswith("--"))
  from align_jax.parallel.local_pod import process_env
  port = 0   # unused: the coordinator is the script's
  procs = []
  for t in range(tasks):
    env = process_env(t, tasks, scenario.get("devices", 4), port, 30, dict(os.environ))
    # The coordinator, count and id are multinode.sh's own (it exported the first two;
    # each task sets its id from SLURM_PROCID): what it sets is what is tested.
    for key in ("ALIGN_JAX_COORDINATOR", "ALIGN_JAX_NUM_PROCESSES", "ALIGN_JAX_PROCESS_ID"):
      env.pop(key)
      if key in os.environ:
        env[key] = os.environ[key]
    env["SLURM_PROCID"] = str(t)
    out = open(output.replace("%t", str(t)), "w") if output else None
    procs.append((subprocess.Popen(args[command:], env=env, stdout=out,
                                   stderr=subprocess.STDOUT), out))
  codes = [p.wait() for p, _ in procs]
  for _, out in procs:
    if out is not None:
      out.close()
  return max(codes)


def main(command: str, args: list[str]) -> int:
  state = Path(os.environ["STANDIN_STATE"])
  if command == "hostname":
    print(os.environ.get("STANDIN_HOSTNAME", "localhost"))
    return 0
  with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps([command, *args]) + "\n")
  scenario = json.loads((state / "scenario.json").read_text())
  if command == "scontrol":
    print("\n".join(scenario.get("nodes", ["localhost", "localhost"])))
    return 0
  if command == "srun":
    return _srun(state, scenario, args)
  words = [a for a in args if a != "alpha"]
  if words[:3] == ["compute", "tpus", "queued-resources"]:
    return _queued_resources(state, scenario, words[3:])
  if words[:3] == ["compute", "tpus", "tpu-vm"] and words[3] == "ssh":
    return _ssh(state, scenario, words[4:])
  if words[:3] == ["compute", "tpus", "tpu-vm"] and words[3] == "scp":
    return _scp(state, scenario, words[4:])
  print(f"stand-in gcloud: no playback for {args}", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv[1], sys.argv[2:]))
