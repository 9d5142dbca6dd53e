"""Looking at packets: one-line summaries, pcapng, libpcap filters, taps, agent sniff."""
