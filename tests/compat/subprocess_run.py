"""Python's subprocess module: the interpreter starts copies of itself
(fork/vfork + exec through _posixsubprocess), talks to them over pipes and
reaps them; plus os.fork and os.waitpid directly."""

import os
import signal
import subprocess
import sys

PY = [sys.executable, "-I", "-c"]

r = subprocess.run(PY + ["import sys; print('child', sys.argv[1:]); sys.exit(3)", "a", "b"],
                   capture_output=True, text=True)
print("run:", r.returncode, repr(r.stdout), repr(r.stderr))

p1 = subprocess.Popen(PY + ["for i in range(1, 101): print(i * i)"], stdout=subprocess.PIPE)
p2 = subprocess.Popen(PY + ["import sys; print(sum(int(l) for l in sys.stdin))"],
                      stdin=p1.stdout, stdout=subprocess.PIPE, text=True)
p1.stdout.close()
out, _ = p2.communicate()
print("pipeline:", out.strip(), p1.wait(), p2.returncode)

r = subprocess.run(PY + ["import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])
print("signalled:", r.returncode)

try:
    subprocess.run(PY + ["import time; time.sleep(60)"], timeout=0.2)
except subprocess.TimeoutExpired:
    print("timeout: child killed")

try:
    subprocess.run(["/no/such/program"])
except FileNotFoundError as e:
    print("missing:", e.errno, e.filename)

r = subprocess.run(PY + ["import sys; sys.stdout.write(sys.stdin.read().upper())"],
                   input="through stdin\n", capture_output=True, text=True)
print("stdin:", r.stdout.strip())

r = subprocess.run(PY + ["import os; print(os.getcwd(), os.environ.get('KILN_CASE'))"],
                   cwd=os.path.dirname(os.path.abspath(__file__)), env={"KILN_CASE": "subprocess"}, capture_output=True, text=True)
print("cwd and env:", r.stdout.strip())

ppid = subprocess.check_output(PY + ["import os; print(os.getppid())"], text=True).strip()
print("parent is us:", ppid == str(os.getpid()))

procs = [subprocess.Popen(PY + [f"import sys; sys.exit({n})"]) for n in range(8)]
print("many:", [p.wait() for p in procs])

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.write(w, b"from the forked child")
    os._exit(42)
os.close(w)
msg = os.read(r, 100)
_, status = os.waitpid(pid, 0)
print("fork:", msg.decode(), os.waitstatus_to_exitcode(status))

child = subprocess.Popen(PY + ["import time; time.sleep(60)"])
child.send_signal(signal.SIGKILL)
print("killed:", child.wait())
