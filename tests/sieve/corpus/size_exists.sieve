if allof (size :over 100K, exists "X-Caffeine") { discard; }
elsif exists ["X-Caffeine", "Message-ID"] { redirect "archive@example.net"; redirect "archive@example.net"; keep; }
