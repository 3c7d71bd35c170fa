"""bench-apps: a Python program of the kind people ship in appliances.

Threads hashing JSON documents, a regular-expression pass over text and a
JSON round trip; prints a short digest so that kiln's output can be
compared with the native run's.
"""

import hashlib
import json
import re
import threading


def hash_documents(count, results):
    digest = hashlib.sha256()
    for i in range(count):
        doc = {"id": i, "square": i * i, "name": f"item-{i:05d}", "tags": ["a", "b"]}
        digest.update(json.dumps(doc, sort_keys=True).encode())
    results.append(digest.hexdigest())


results = []
threads = [threading.Thread(target=hash_documents, args=(3000, results)) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()

text = " ".join(f"user{i}@host{i % 7}.example key={i * 31 % 1000}" for i in range(20000))
emails = re.findall(r"\b(\w+)@(\w+)\.example\b", text)
keys = sum(int(k) for k in re.findall(r"key=(\d+)", text))
table = json.loads(json.dumps({"emails": len(emails), "keys": keys}))
print(len(set(results)), results[0][:16], table["emails"], table["keys"])
