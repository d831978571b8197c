// seed-sarama reproduces the seed tutorial's producer, the baseline shipper is measured against in
// scripts/bench-produce: a sarama SyncProducer (acks=all, random partitioner, Return.Successes) that
// reads stdin line by line and sends each line with key "key", one SendMessage (one round trip) at a time.
//
//	seed-sarama -brokers 127.0.0.1:9092 -topic t [-acks all|1] [-codec none|lz4|zstd] < lines.txt
//
// It prints the number of records sent to stderr and exits non-zero on the first failed send.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/IBM/sarama"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "bootstrap brokers, comma-separated")
	topic := flag.String("topic", "", "topic to write to")
	acks := flag.String("acks", "all", "required acks: all or 1")
	codec := flag.String("codec", "none", "compression: none, lz4 or zstd")
	flag.Parse()
	if *topic == "" {
		fail("-topic is required")
	}

	config := sarama.NewConfig()
	config.Producer.Partitioner = sarama.NewRandomPartitioner
	config.Producer.Return.Successes = true
	switch *acks {
	case "all", "-1":
		config.Producer.RequiredAcks = sarama.WaitForAll
	case "1":
		config.Producer.RequiredAcks = sarama.WaitForLocal
	default:
		fail("-acks must be all or 1, got %q", *acks)
	}
	switch *codec {
	case "none":
		config.Producer.Compression = sarama.CompressionNone
	case "lz4":
		config.Producer.Compression = sarama.CompressionLZ4
	case "zstd":
		config.Producer.Compression = sarama.CompressionZSTD
	default:
		fail("-codec must be none, lz4 or zstd, got %q", *codec)
	}
	// config.Version stays sarama's default (2.8.0), as in the tutorial; it already allows zstd.

	producer, err := sarama.NewSyncProducer(strings.Split(*brokers, ","), config)
	if err != nil {
		fail("connect to %s: %v", *brokers, err)
	}

	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	sent := 0
	for scanner.Scan() {
		msg := &sarama.ProducerMessage{
			Topic: *topic,
			Key:   sarama.StringEncoder("key"),
			Value: sarama.StringEncoder(scanner.Text()),
		}
		if _, _, err := producer.SendMessage(msg); err != nil {
			producer.Close()
			fail("send record %d: %v", sent+1, err)
		}
		sent++
	}
	if err := scanner.Err(); err != nil {
		producer.Close()
		fail("read stdin: %v", err)
	}
	if err := producer.Close(); err != nil {
		fail("close producer: %v", err)
	}
	fmt.Fprintf(os.Stderr, "seed-sarama: sent %d records to %s\n", sent, *topic)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "seed-sarama: error: "+format+"\n", args...)
	os.Exit(1)
}
