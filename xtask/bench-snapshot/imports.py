# bench-snapshot's Python program: a start-up that imports a large part of
# the standard library (what a web service or a CLI tool pays before its
# first line of work), then one small piece of work. "ready" marks the end
# of the start-up: the snapshot is taken right after it.
import argparse, ast, asyncio, base64, bisect, calendar, collections, configparser
import contextlib, copy, csv, dataclasses, datetime, decimal, difflib, dis, email.message
import email.parser, email.policy, enum, fractions, functools, gettext, gzip, hashlib, heapq
import html.parser, http.client, http.cookies, inspect, ipaddress, itertools, json, logging
import logging.handlers, lzma, bz2, mailbox, mimetypes, operator, pathlib, pickle, pprint
import queue, random, re, secrets, selectors, shlex, shutil, socket, statistics, string
import struct, tarfile, tempfile, textwrap, threading, tomllib, typing, unicodedata
import unittest, urllib.parse, urllib.request, uuid, xml.dom.minidom, xml.etree.ElementTree
import zipfile, zlib, concurrent.futures, smtplib, imaplib, ftplib, xmlrpc.client

print("ready", flush=True)

doc = {"squares": [i * i for i in range(2000)], "when": "fixed"}
digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
print(digest[:16], len(re.findall(r"\d+", json.dumps(doc))))
