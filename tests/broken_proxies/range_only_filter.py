"""iptables-restore filter of stale_service_cidr.sh: drops KUBE-SERVICES cluster-IP rules outside the range argv[1]."""
import ipaddress
import re
import sys
net = ipaddress.ip_network(sys.argv[1])
rule = re.compile(r'^-A KUBE-SERVICES .*cluster IP" .*-d (\S+?)(/32)? ')
for line in sys.stdin:
    m = rule.match(line)
    if m and ipaddress.ip_address(m.group(1)) not in net:
        continue
    sys.stdout.write(line)
