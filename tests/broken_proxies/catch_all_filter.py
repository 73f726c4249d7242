"""iptables-restore filter of answer_unallocated.sh: a catch-all for every service range it sees, before the NodePort jump."""
import ipaddress
import re
import sys
configured = ipaddress.ip_network(sys.argv[1])
rule = re.compile(r'^-A KUBE-SERVICES .*:(\S+) cluster IP" .*-p (tcp|udp) -d (\S+?)(/32)? .*-j (KUBE-SVC-\S+)')
lines = sys.stdin.readlines()
ranges, chains = [configured], {}
for line in lines:
    m = rule.match(line)
    if m:
        # The suite's template names its ports http (TCP) and udp: an agnhost backend answers either.
        if m.group(1) == {"tcp": "http", "udp": "udp"}[m.group(2)]:
            chains.setdefault(m.group(2), m.group(5))
        ip = ipaddress.ip_address(m.group(3))
        if ip not in configured:
            block = ipaddress.ip_network(f"{ip}/24", strict=False)
            if block not in ranges:
                ranges.append(block)
for line in lines:
    if line.startswith("-A KUBE-SERVICES ") and "-j KUBE-NODEPORTS" in line:
        for proto, chain in sorted(chains.items()):
            for net in ranges:
                sys.stdout.write(f"-A KUBE-SERVICES -d {net} -p {proto} -j {chain}\n")
    sys.stdout.write(line)
